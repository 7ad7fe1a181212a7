//! The window shape: chunks of one grid streamed into another (the
//! overlap stage's halo, the in-memory rechunk, the slice), holding only
//! the source chunks a later destination chunk still needs.

use std::time::Instant;

use blockflow_core::{with_array, with_dtype, ArrayData, ArrayKind, Chunk, DType, Region};

use super::{Ctx, In, Out, RunError};

/// Gives every chunk of the input grid its halo from its neighbours.
/// Chunks arrive in row-major order; a chunk goes out as soon as the last
/// neighbour its halo touches has arrived, and a chunk is dropped as soon
/// as no later chunk's halo touches it, so the window stays within the
/// plan's bound. Positions beyond the array's edges are left 0 for the
/// kernel to fill by its boundary mode.
pub(super) fn overlap(
    ctx: &mut Ctx<'_>,
    input: &In,
    outs: &[Out],
    drop: &[bool],
    regrid: &crate::plan::Regrid,
) -> Result<(), RunError> {
    let grid = regrid.dst.clone();
    let src = regrid.src.clone();
    let halo = &regrid.halo;
    let dtype = ctx
        .stage
        .output
        .as_ref()
        .map(|o| o.dtype)
        .unwrap_or(DType::F64);
    let total = grid.num_chunks();
    let need_last = |idx: &[u64]| regrid.need_last(idx);
    let last_user = |idx: &[u64]| regrid.last_user(idx);
    let mut window: std::collections::BTreeMap<u64, Chunk> = std::collections::BTreeMap::new();
    let mut next = 0u64;
    let mut last_in: Option<u64> = None;
    let mut ended = false;
    loop {
        ctx.check_cancel()?;
        match ctx.recv(input)? {
            Some(chunk) => {
                let n = src.ravel(&chunk.index);
                if last_in.is_some_and(|l| n != l + 1) || (last_in.is_none() && n != 0) {
                    return Err(
                        ctx.err(Some(&chunk.index), "chunks arrived out of row-major order")
                    );
                }
                last_in = Some(n);
                // A chunk no destination chunk needs (outside a slice) is dropped.
                if last_user(&chunk.index).is_some() {
                    window.insert(n, chunk);
                }
            }
            None => ended = true,
        }
        while next < total {
            let idx = grid.unravel(next);
            if !ended && last_in.is_none_or(|l| need_last(&idx) > l) {
                break;
            }
            let t = Instant::now();
            let block = if regrid.map.is_empty() {
                assemble(&grid, &idx, halo, dtype, &window)
            } else {
                assemble_sliced(regrid, &idx, dtype, &window)
            }
            .map_err(|m| ctx.err(Some(&idx), m))?;
            ctx.report.busy_seconds += t.elapsed().as_secs_f64();
            let held: u64 = window.values().map(Chunk::nbytes).sum::<u64>() + block.nbytes();
            ctx.note_held(held);
            let chunk = if drop.iter().any(|&d| d) {
                // Axes indexed by an integer leave the result (a slice has no halo).
                let keep = |v: &[u64]| -> Vec<u64> {
                    v.iter()
                        .zip(drop)
                        .filter(|(_, &d)| !d)
                        .map(|(&x, _)| x)
                        .collect()
                };
                let out_idx = keep(&idx);
                let out_grid = &ctx.stage.grid;
                let shape: Vec<usize> = out_grid.region(&out_idx).shape_usize();
                let block = with_array!(block, a => ArrayKind::wrap(
                    a.into_shape_with_order(ndarray::IxDyn(&shape)).map_err(|e| ctx.err(Some(&idx), e.to_string()))?
                ));
                Chunk::new(out_idx.clone(), out_grid.region(&out_idx), block, ctx.meter)
            } else {
                let mut chunk = Chunk::new(idx.clone(), grid.region(&idx), block, ctx.meter);
                chunk.halo = halo.iter().map(|&(b, a)| (b as u64, a as u64)).collect();
                chunk
            };
            ctx.send(outs, chunk)?;
            next += 1;
            window.retain(|&n, _| last_user(&src.unravel(n)).is_some_and(|u| u >= next));
        }
        if ended {
            if next != total {
                return Err(ctx.err(None, format!("input ended after {next} of {total} chunks")));
            }
            ctx.end(outs);
            return Ok(());
        }
    }
}

/// Puts the chunks of a small array together.
pub(crate) fn gather(chunks: &[Chunk]) -> Result<ArrayData, String> {
    let first = chunks.first().ok_or("no chunks")?;
    let nd = first.region.ndim();
    let shape: Vec<usize> = (0..nd)
        .map(|ax| chunks.iter().map(|c| c.region.end()[ax]).max().unwrap_or(0) as usize)
        .collect();
    let dtype = first.array().dtype();
    Ok(with_dtype!(dtype, T => {
        let mut out = ndarray::ArrayD::<T>::default(ndarray::IxDyn(&shape));
        for c in chunks {
            let data = T::unwrap_ref(c.array()).ok_or("mixed dtypes")?;
            let info: Vec<ndarray::SliceInfoElem> = c
                .region
                .origin
                .iter()
                .zip(&c.region.shape)
                .map(|(&o, &n)| ndarray::SliceInfoElem::Slice { start: o as isize, end: Some((o + n) as isize), step: 1 })
                .collect();
            let info = ndarray::SliceInfo::<_, ndarray::IxDyn, ndarray::IxDyn>::try_from(info).map_err(|e| e.to_string())?;
            out.slice_mut(info).assign(data);
        }
        T::wrap(out)
    }))
}

/// The part of `data` (which covers `whole`) that `region` covers.
pub(crate) fn crop(data: &ArrayData, whole: &Region, region: &Region) -> ArrayData {
    let info: Vec<ndarray::SliceInfoElem> = (0..whole.ndim())
        .map(|ax| {
            let a = (region.origin[ax] - whole.origin[ax]) as isize;
            ndarray::SliceInfoElem::Slice {
                start: a,
                end: Some(a + region.shape[ax] as isize),
                step: 1,
            }
        })
        .collect();
    with_array!(data, a => {
        match ndarray::SliceInfo::<_, ndarray::IxDyn, ndarray::IxDyn>::try_from(info) {
            Ok(info) => ArrayKind::wrap(a.slice(info).to_owned()),
            Err(_) => data.clone(),
        }
    })
}

/// Copies the positions of slice destination chunk `idx` (a box of
/// `regrid.dst`; position j along an axis is source position start + j step)
/// from the window's chunks.
fn assemble_sliced(
    regrid: &crate::plan::Regrid,
    idx: &[u64],
    dtype: DType,
    window: &std::collections::BTreeMap<u64, Chunk>,
) -> Result<ArrayData, String> {
    use ndarray::{SliceInfo, SliceInfoElem};
    let region = regrid.dst.region(idx);
    let dims = region.shape_usize();
    let mut filled = 0u64;
    let out = with_dtype!(dtype, T => {
        let mut block = ndarray::ArrayD::<T>::default(ndarray::IxDyn(&dims));
        for chunk in window.values() {
            let r = &chunk.region;
            let mut dst = Vec::with_capacity(dims.len());
            let mut src = Vec::with_capacity(dims.len());
            let mut empty = false;
            for ax in 0..dims.len() {
                let (start, step) = regrid.map[ax];
                let (o0, o1) = (region.origin[ax], region.end()[ax]);
                let (r0, r1) = (r.origin[ax], r.end()[ax]);
                // j with r0 <= start + j step < r1, within [o0, o1).
                let j0 = if r0 > start { (r0 - start).div_ceil(step) } else { 0 }.max(o0);
                if r1 <= start {
                    empty = true;
                    break;
                }
                let j1 = ((r1 - 1 - start) / step + 1).min(o1);
                if j1 <= j0 {
                    empty = true;
                    break;
                }
                dst.push(SliceInfoElem::Slice { start: (j0 - o0) as isize, end: Some((j1 - o0) as isize), step: 1 });
                let s0 = start + j0 * step - r0;
                src.push(SliceInfoElem::Slice { start: s0 as isize, end: Some((s0 + (j1 - j0 - 1) * step + 1) as isize), step: step as isize });
            }
            if empty {
                continue;
            }
            let data = T::unwrap_ref(chunk.array()).ok_or_else(|| format!("chunk {:?} has dtype {}, expected {dtype}", chunk.index, chunk.array().dtype()))?;
            let dst = SliceInfo::<_, ndarray::IxDyn, ndarray::IxDyn>::try_from(dst).map_err(|e| e.to_string())?;
            let src = SliceInfo::<_, ndarray::IxDyn, ndarray::IxDyn>::try_from(src).map_err(|e| e.to_string())?;
            let part = data.slice(src);
            filled += part.len() as u64;
            block.slice_mut(dst).assign(&part);
        }
        T::wrap(block)
    });
    if filled != region.elements() {
        return Err(format!(
            "the window lacked source chunks ({filled} of {} values found)",
            region.elements()
        ));
    }
    Ok(out)
}

/// Copies the parts of the window's chunks that chunk `idx` with its halo covers.
fn assemble(
    grid: &blockflow_core::ChunkGrid,
    idx: &[u64],
    halo: &[(usize, usize)],
    dtype: DType,
    window: &std::collections::BTreeMap<u64, Chunk>,
) -> Result<ArrayData, String> {
    use ndarray::{SliceInfo, SliceInfoElem};
    let region = grid.region(idx);
    let shape = grid.shape();
    let lo: Vec<i64> = region
        .origin
        .iter()
        .zip(halo)
        .map(|(&o, &(b, _))| o as i64 - b as i64)
        .collect();
    let hi: Vec<i64> = region
        .end()
        .iter()
        .zip(halo)
        .map(|(&e, &(_, a))| e as i64 + a as i64)
        .collect();
    let dims: Vec<usize> = lo.iter().zip(&hi).map(|(l, h)| (h - l) as usize).collect();
    let mut filled = 0u64;
    let out = with_dtype!(dtype, T => {
        let mut block = ndarray::ArrayD::<T>::default(ndarray::IxDyn(&dims));
        for chunk in window.values() {
            let r = &chunk.region;
            let mut dst = Vec::with_capacity(dims.len());
            let mut src = Vec::with_capacity(dims.len());
            let mut empty = false;
            for ax in 0..dims.len() {
                let a0 = lo[ax].max(0).max(r.origin[ax] as i64);
                let a1 = hi[ax].min(shape[ax] as i64).min(r.end()[ax] as i64);
                if a1 <= a0 {
                    empty = true;
                    break;
                }
                dst.push(SliceInfoElem::Slice { start: (a0 - lo[ax]) as isize, end: Some((a1 - lo[ax]) as isize), step: 1 });
                src.push(SliceInfoElem::Slice { start: (a0 - r.origin[ax] as i64) as isize, end: Some((a1 - r.origin[ax] as i64) as isize), step: 1 });
            }
            if empty {
                continue;
            }
            let data = T::unwrap_ref(chunk.array()).ok_or_else(|| format!("chunk {:?} has dtype {}, expected {dtype}", chunk.index, chunk.array().dtype()))?;
            let dst = SliceInfo::<_, ndarray::IxDyn, ndarray::IxDyn>::try_from(dst).map_err(|e| e.to_string())?;
            let src = SliceInfo::<_, ndarray::IxDyn, ndarray::IxDyn>::try_from(src).map_err(|e| e.to_string())?;
            let part = data.slice(src);
            filled += part.len() as u64;
            block.slice_mut(dst).assign(&part);
        }
        T::wrap(block)
    });
    // Every in-array position of the block must have been found.
    let want: u64 = (0..dims.len())
        .map(|ax| (hi[ax].min(shape[ax] as i64) - lo[ax].max(0)) as u64)
        .product();
    if filled != want {
        return Err(format!(
            "the window lacked neighbours ({filled} of {want} values found)"
        ));
    }
    Ok(out)
}
