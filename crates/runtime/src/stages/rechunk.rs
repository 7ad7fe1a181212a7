//! `rechunk`: the same array in other chunks, in a stream: in memory (a
//! sliding window of source chunks) or through an intermediate store on
//! disk, when the config asks for it or the planner spills it there
//! because the plan would not fit in memory.

use std::any::Any;
use std::path::PathBuf;

use blockflow_core::{human_bytes, Chunk, ChunkGrid, Region};
use blockflow_io::zarr::{ZarrReader, ZarrWriter};

use super::{
    p, Arity, Barrier, BarrierOp, Exec, KindDef, MemoryCx, PType, PlanCx, Planned, SpillCx, Stage,
    Window,
};
use crate::exec::keep::scratch_store;
use crate::exec::{RunError, StageIo};
use crate::plan::{gcd, Regrid};

pub static KIND: KindDef = KindDef {
    kind: "rechunk",
    role: "kernel",
    summary: "the same array in other chunks, in a stream: in memory when the chunks it must hold fit the budget, else through an intermediate Zarr store on disk (written as chunks arrive, read back in the new chunks, removed afterwards); `blockflow plan` says which and why",
    inputs: Arity::Exactly(1),
    params: &[
        p("chunks", PType::Chunks, None, "the new chunk shape, one length per axis: an integer, -1 for the whole axis, or \"auto\" (lengths that make chunks of about 64 MiB, or a 16th of `memory` if less, as dask's `chunks=\"auto\"`); or \"auto\" for every axis"),
        p("route", PType::Choice(&["auto", "memory", "disk"]), Some("auto"), "auto: in memory unless the plan would exceed `memory`; memory or disk to force one"),
    ],
    example: "inputs = [\"f32_2d\"]\nchunks = [4, 14]",
    plan,
};

/// The chunk size `"auto"` aims at (dask's default `array.chunk-size` is
/// 128 MiB; half that keeps a rechunk's window within the budgets these
/// pipelines run under).
pub const AUTO_CHUNK_BYTES: u64 = 64 << 20;

/// How a rechunk moves its data.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// A sliding window of source chunks in memory.
    Memory,
    /// Every source chunk written to an intermediate Zarr store in `dir` as
    /// it arrives, cut into `inter` chunks; once all are in, the new chunks
    /// are read back `group` at a time (a run of consecutive chunks in
    /// row-major order: whole trailing axes, then part of one axis), each
    /// group made of whole intermediate chunks. `why`: why this route.
    Disk {
        inter: Vec<u64>,
        group: Vec<u64>,
        dir: PathBuf,
        why: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rechunk {
    /// The input's grid and the new one.
    pub src: ChunkGrid,
    pub dst: ChunkGrid,
    /// The source chunks the in-memory route holds at once.
    pub window: u64,
    /// What the config asked for: None is auto (the planner may spill it).
    pub forced: Option<bool>,
    pub route: Route,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let stream = cx.input(0)?;
    let target = (cx.memory / 16).clamp(1 << 20, AUTO_CHUNK_BYTES);
    let chunks = match cx
        .p
        .chunks("chunks", stream.shape(), stream.dtype.size() as u64, target)?
    {
        Ok(c) => c,
        Err(e) => return cx.err("chunks", e),
    };
    let grid = cx.grid("chunks", stream.shape().to_vec(), chunks)?;
    let src = stream.grid.clone();
    let window = Regrid::new(src.clone(), grid.clone(), vec![(0, 0); src.ndim()]).window();
    let forced = match cx.p.str("route").as_deref() {
        Some("memory") => Some(false),
        Some("disk") => Some(true),
        _ => None,
    };
    let route = if forced == Some(true) {
        disk_route(
            &src,
            &grid,
            stream.dtype.size() as u64,
            cx.memory,
            "`route = \"disk\"` in the config".into(),
        )
    } else {
        Route::Memory
    };
    let op = Rechunk {
        src,
        dst: grid.clone(),
        window,
        forced,
        route,
    };
    Some(Planned::sends(op, stream.dtype, grid))
}

/// How many destination chunks a disk rechunk reads back at once, per
/// axis: as many consecutive ones (row-major) as fit in `target` bytes,
/// whole trailing axes first. Bigger groups mean bigger intermediate chunks,
/// so fewer, larger files.
pub fn read_group(dst: &ChunkGrid, item: u64, target: u64) -> Vec<u64> {
    let g = dst.grid_shape();
    let c = dst.chunk_shape();
    let mut group = vec![1u64; g.len()];
    let bytes = |group: &[u64]| -> u64 {
        (0..g.len())
            .map(|ax| (group[ax] * c[ax]).min(dst.shape()[ax]))
            .product::<u64>()
            * item
    };
    for ax in (0..g.len()).rev() {
        while group[ax] < g[ax] {
            group[ax] += 1;
            if bytes(&group) > target {
                group[ax] -= 1;
                break;
            }
        }
        if group[ax] < g[ax] {
            break;
        }
    }
    group
}

/// The chunks of a rechunk's intermediate store: every source chunk is
/// made of whole ones (writes need no read-modify-write) and so is every
/// group of destination chunks read back (reads decode nothing they do not
/// return). Per axis that is the greatest common divisor of the source
/// chunk's and the group's lengths, or one of them where the other holds
/// the whole axis.
pub fn intermediate_chunks(src: &ChunkGrid, dst: &ChunkGrid, group: &[u64]) -> Vec<u64> {
    (0..src.ndim())
        .map(|ax| {
            let n = src.shape()[ax];
            let s = src.chunk_shape()[ax];
            let d = (dst.chunk_shape()[ax] * group[ax]).min(n);
            if s >= n {
                d.max(1)
            } else if d >= n {
                s.max(1)
            } else {
                gcd(s, d).max(1)
            }
        })
        .collect()
}

/// The disk route from `src` to `dst` under `memory`.
fn disk_route(src: &ChunkGrid, dst: &ChunkGrid, item: u64, memory: u64, why: String) -> Route {
    let group = read_group(dst, item, (memory / 32).clamp(1 << 20, 64 << 20));
    Route::Disk {
        inter: intermediate_chunks(src, dst, &group),
        group,
        dir: PathBuf::new(),
        why,
    }
}

impl Stage for Rechunk {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        match &self.route {
            Route::Memory => format!(
                "in memory, from chunks {:?}, holding up to {} of them at once",
                self.src.chunk_shape(),
                self.window
            ),
            Route::Disk {
                inter,
                group,
                dir,
                why,
            } => format!(
                "through disk, from chunks {:?} via an intermediate store of chunks {inter:?} in {} (removed afterwards), read back {group:?} chunks at a time, because {why}",
                self.src.chunk_shape(),
                dir.display()
            ),
        }
    }
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        match &self.route {
            // The source chunks it must hold, and the chunk being assembled.
            Route::Memory => self.window as u128 * m.in_bytes + m.out_bytes,
            // The chunk being cut into the store and its encoded pieces; the
            // new chunks being read, each with its decoded pieces.
            Route::Disk { group, .. } => {
                2 * m.in_bytes
                    + group
                        .iter()
                        .fold(2 * m.out_bytes, |a, &g| a.saturating_mul(g as u128))
            }
        }
    }
    fn exec(&self) -> Exec<'_> {
        match self.route {
            Route::Memory => Exec::Window(Window {
                regrid: Regrid::new(
                    self.src.clone(),
                    self.dst.clone(),
                    vec![(0, 0); self.src.ndim()],
                ),
                drop: Vec::new(),
            }),
            Route::Disk { .. } => Exec::Barrier(self),
        }
    }
    fn scratch_dir_mut(&mut self) -> Option<&mut PathBuf> {
        match &mut self.route {
            Route::Disk { dir, .. } => Some(dir),
            Route::Memory => None,
        }
    }
    /// A rechunk left to the planner goes through disk.
    fn spill(&mut self, cx: &SpillCx<'_>) -> bool {
        if self.forced.is_some() || self.route != Route::Memory {
            return false;
        }
        self.route = disk_route(
            &self.src,
            cx.grid,
            cx.item,
            cx.memory,
            format!(
                "in memory it would hold up to {} source chunks ({} for this stage) and the plan {} of the {} budget",
                self.window,
                human_bytes(cx.own),
                human_bytes(cx.projected),
                human_bytes(cx.memory)
            ),
        );
        true
    }
    /// Bigger read groups make bigger intermediate chunks (fewer, larger
    /// files): the groups get a sixth of what the budget has left, up to
    /// 64 MiB.
    fn tune_spill(&mut self, cx: &SpillCx<'_>, spare: u64) {
        if let Route::Disk { inter, group, .. } = &mut self.route {
            let now = group.iter().product::<u64>() * cx.grid.chunk_elements() * cx.item;
            let target = (now + spare / 6).min(64 << 20);
            *group = read_group(cx.grid, cx.item, target);
            *inter = intermediate_chunks(&self.src, cx.grid, group);
        }
    }
}

impl BarrierOp for Rechunk {
    fn start(&self, io: &mut StageIo<'_, '_>) -> Result<Box<dyn Barrier>, RunError> {
        let Route::Disk {
            inter, group, dir, ..
        } = &self.route
        else {
            return Err(io.err(None, "internal: an in-memory rechunk run as a barrier"));
        };
        let spec = io
            .stage()
            .output
            .clone()
            .ok_or_else(|| io.err(None, "internal: a rechunk without an output"))?;
        let path = io.scratch_path(dir);
        let inter_grid = ChunkGrid::new(spec.grid.shape().to_vec(), inter.clone())
            .map_err(|e| io.err(None, format!("internal: {e}")))?;
        let groups = ChunkGrid::new(self.dst.grid_shape(), group.clone())
            .map_err(|e| io.err(None, format!("internal: {e}")))?;
        // Dropped unfinished when the stage ends: that removes the store.
        let store = scratch_store(&path, spec.dtype, &inter_grid)
            .map_err(|e| io.err(None, e.to_string()))?;
        Ok(Box::new(ThroughDisk {
            store,
            path,
            grid: self.dst.clone(),
            groups,
        }))
    }
}

/// The rechunker's disk route (as rechunker and Cubed do it): every source
/// chunk is cut into the intermediate store's chunks as it arrives (in the
/// pool, `parallel` at once); when the input has ended, each group of new
/// chunks is read back whole from the store, in row-major order.
struct ThroughDisk {
    store: ZarrWriter,
    path: PathBuf,
    grid: ChunkGrid,
    /// Groups of consecutive new chunks read back at once.
    groups: ChunkGrid,
}

impl Barrier for ThroughDisk {
    fn prepare(&self, _input: usize, c: &Chunk) -> Result<Option<Box<dyn Any + Send>>, String> {
        self.store
            .write(&c.region, c.array(), &c.index)
            .map_err(|e| format!("writing the intermediate store: {e}"))?;
        Ok(None)
    }

    fn add(
        &mut self,
        _io: &mut StageIo<'_, '_>,
        _input: usize,
        _chunk: Chunk,
        _part: Option<Box<dyn Any + Send>>,
    ) -> Result<(), RunError> {
        Ok(())
    }

    fn finish(self: Box<Self>, io: &mut StageIo<'_, '_>) -> Result<(), RunError> {
        let name = &io.stage().name;
        tracing::debug!(stage = %name, "rechunk: all chunks in the intermediate store");
        let reader = ZarrReader::open(&self.path)
            .map_err(|e| io.err(None, format!("reading the intermediate store back: {e}")))?;
        let grid = &self.grid;
        for gi in self.groups.indices() {
            io.check_cancel()?;
            let members = self.groups.region(&gi);
            let first = grid.region(&members.origin);
            let last: Vec<u64> = members.end().iter().map(|e| e - 1).collect();
            let end = grid.region(&last).end();
            let whole = Region::new(
                first.origin.clone(),
                end.iter().zip(&first.origin).map(|(e, o)| e - o).collect(),
            );
            let data = io
                .busy(|| reader.read(&whole, &members.origin))
                .map_err(|e| {
                    io.err(
                        Some(&members.origin),
                        format!("reading the intermediate store back: {e}"),
                    )
                })?;
            let held = data.nbytes();
            let sub = ChunkGrid::new(members.shape.clone(), vec![1; members.ndim()])
                .map_err(|e| io.err(None, format!("internal: {e}")))?;
            for local in sub.indices() {
                let index: Vec<u64> = local
                    .iter()
                    .zip(&members.origin)
                    .map(|(l, o)| l + o)
                    .collect();
                let region = grid.region(&index);
                let part = crate::exec::crop(&data, &whole, &region);
                io.note_held(held + part.nbytes());
                io.send(index, part)?;
            }
        }
        tracing::debug!(stage = %name, "rechunk: all new chunks sent");
        drop(reader);
        drop(self.store);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use blockflow_core::DType;

    fn rechunk_of(s: &crate::plan::PlannedStage) -> &Rechunk {
        let op = &s.kind;
        op.as_any().downcast_ref::<Rechunk>().expect("a rechunk")
    }

    #[test]
    fn whole_axes_and_auto_lengths_as_dask_takes_them() {
        // -1: the whole axis, at any length (a time axis of 20 or 10,000).
        for n in [10u64, 20, 37] {
            let s = plan_one(
                "kind = \"rechunk\"\nchunks = [-1, 5]",
                &[DType::F32],
                &[n, 12],
                &[1, 12],
            );
            assert_eq!(s.grid.chunk_shape(), &[n, 5]);
        }
        // "auto": about 64 MiB (the budget's 16th at the default 1 GiB);
        // the short channel axis whole, the others equal.
        let s = plan_one(
            "kind = \"rechunk\"\nchunks = \"auto\"",
            &[DType::F32],
            &[4096, 4096, 3],
            &[512, 512, 3],
        );
        assert_eq!(s.grid.chunk_shape(), &[2364, 2364, 3]);
        let s = plan_one(
            "kind = \"rechunk\"\nchunks = [-1, \"auto\", 2]",
            &[DType::F64],
            &[100, 1_000_000, 4],
            &[10, 1000, 4],
        );
        assert_eq!(s.grid.chunk_shape(), &[100, 41943, 2]);
        let e = plan_err(
            "kind = \"rechunk\"\nchunks = [-2, 5]",
            &[DType::F32],
            &[10, 12],
            &[1, 12],
        );
        assert!(e.contains("-1 (the whole axis)"), "{e}");
        let e = plan_err(
            "kind = \"rechunk\"\nchunks = [-1]",
            &[DType::F32],
            &[10, 12],
            &[1, 12],
        );
        assert!(e.contains("has 1 axes but the array has 2"), "{e}");
    }

    #[test]
    fn in_memory_it_holds_the_source_chunks_a_new_chunk_spans() {
        // Rows of 10 x 40 into columns of 40 x 10: every new chunk needs
        // every source chunk.
        let s = plan_one(
            "kind = \"rechunk\"\nchunks = [40, 10]",
            &[DType::F32],
            &[40, 40],
            &[10, 40],
        );
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::F32));
        assert_eq!(s.grid.shape(), &[40, 40]);
        assert_eq!(s.grid.chunk_shape(), &[40, 10]);
        let r = rechunk_of(&s);
        assert_eq!(r.route, Route::Memory);
        assert_eq!(r.window, 4);
        // 4 source chunks of 1600 bytes, and the new chunk.
        assert_eq!(s.mem.working, 4 * 1600 + 1600);
        assert_eq!(
            r.describe(),
            "in memory, from chunks [10, 40], holding up to 4 of them at once"
        );
        assert!(matches!(r.exec(), Exec::Window(_)));
    }

    #[test]
    fn a_forced_disk_route_reads_back_groups_of_whole_intermediate_chunks() {
        let s = plan_one(
            "kind = \"rechunk\"\nchunks = [40, 10]\nroute = \"disk\"",
            &[DType::F32],
            &[40, 40],
            &[10, 40],
        );
        let r = rechunk_of(&s);
        // 64 GiB / 32 is more than the 64 MiB cap: the whole array at once.
        let Route::Disk {
            inter, group, why, ..
        } = &r.route
        else {
            panic!("disk")
        };
        assert_eq!(group, &vec![1, 4]);
        assert_eq!(inter, &vec![10, 40]);
        assert!(why.contains("`route = \"disk\"`"), "{why}");
        // Twice the source chunk; twice each of the 4 chunks read back.
        assert_eq!(s.mem.working, 2 * 1600 + 4 * 2 * 1600);
        assert!(matches!(r.exec(), Exec::Barrier(_)));
        assert!(r
            .describe()
            .starts_with("through disk, from chunks [10, 40]"));
    }

    #[test]
    fn the_planner_spills_a_rechunk_that_does_not_fit_and_keeps_a_forced_one() {
        // 4 MiB of float32 in rows; into columns the window holds it all.
        let text = |route: &str| {
            config(
                &format!("kind = \"rechunk\"\nchunks = [1024, 64]{route}"),
                &[DType::F32],
                &[1024, 1024],
                &[64, 1024],
            )
            .replace("memory = \"64 GiB\"", "memory = \"7 MiB\"")
        };
        let plan = plan_text(&text(""), &crate::catalog::FakeCatalog::default()).expect("plans");
        let s = stage_named(&plan, "s");
        let r = rechunk_of(s);
        let Route::Disk { why, group, .. } = &r.route else {
            panic!("spilled: {r:?}")
        };
        assert!(why.contains("would hold up to 16 source chunks"), "{why}");
        assert!(group.iter().product::<u64>() >= 1);
        assert!(plan.projected_bytes() <= 7 << 20);
        let e = plan_text(
            &text("\nroute = \"memory\""),
            &crate::catalog::FakeCatalog::default(),
        )
        .expect_err("refused");
        assert!(e.contains("`memory` is 7.00 MiB"), "{e}");
    }

    #[test]
    fn groups_and_intermediate_chunks() {
        let dst = ChunkGrid::new(vec![100, 60], vec![10, 20]).expect("grid");
        // 10 x 60 float64 rows are 4800 bytes: two rows fit in 10000.
        assert_eq!(read_group(&dst, 8, 10_000), vec![2, 3]);
        assert_eq!(read_group(&dst, 8, 100), vec![1, 1]);
        let src = ChunkGrid::new(vec![100, 60], vec![25, 60]).expect("grid");
        // gcd(25, 20) along axis 0; the source holds axis 1 whole.
        assert_eq!(intermediate_chunks(&src, &dst, &[2, 3]), vec![5, 60]);
    }
}
