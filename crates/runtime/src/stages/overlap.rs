//! `overlap`: inserted by the planner before every stage that needs a halo
//! (never written in a config, so not in [`super::KINDS`]): gives each chunk
//! its halo from its neighbours, keeping a sliding window of chunks.

use blockflow_core::ChunkGrid;

use super::{Exec, MemoryCx, Stage, Window};
use crate::plan::{window_chunks, Regrid};

#[derive(Debug, Clone, PartialEq)]
pub struct Overlap {
    /// The stream's grid (the same in and out).
    pub grid: ChunkGrid,
    pub halo: Vec<(usize, usize)>,
    /// The most chunks the window holds.
    pub window: u64,
}

impl Overlap {
    /// The overlap stage giving `grid`'s chunks `halo`.
    pub fn new(grid: ChunkGrid, halo: Vec<(usize, usize)>) -> Overlap {
        let window = window_chunks(&grid, &halo);
        Overlap { grid, halo, window }
    }
}

impl Stage for Overlap {
    fn kind(&self) -> &'static str {
        "overlap"
    }
    fn describe(&self) -> String {
        let halo: Vec<String> = self
            .halo
            .iter()
            .map(|(b, a)| format!("({b}, {a})"))
            .collect();
        format!(
            "halo [{}] from a sliding window of at most {} chunks",
            halo.join(", "),
            self.window
        )
    }
    /// The window of chunks and the block being assembled.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        self.window as u128 * m.in_bytes + m.out_bytes
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Window(Window {
            regrid: Regrid::new(self.grid.clone(), self.grid.clone(), self.halo.clone()),
            drop: Vec::new(),
        })
    }
    fn sends_halo(&self) -> Option<&[(usize, usize)]> {
        Some(&self.halo)
    }
    fn over_budget(&self, serves: &str) -> Option<String> {
        Some(format!(
            "Its sliding window holds up to {} chunks (about one row of the chunk grid) to give \"{serves}\" its halo; use smaller chunks, or raise `memory`",
            self.window
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use blockflow_core::DType;

    #[test]
    fn the_planner_puts_one_before_a_stage_that_needs_a_halo() {
        // A gaussian of sigma 1 reaches 4 positions (truncate 4) each way.
        let text = config(
            "kind = \"filter\"\nfilter = \"gaussian\"\nsigma = 1.0",
            &[DType::F32],
            &[40, 30],
            &[10, 10],
        );
        let plan = plan_text(&text, &crate::catalog::FakeCatalog::default()).expect("plans");
        let ov = stage_named(&plan, "s.halo");
        assert_eq!(ov.kind.name(), "overlap");
        assert_eq!(ov.grid.chunk_shape(), &[10, 10]);
        let op = &ov.kind;
        let o = op.as_any().downcast_ref::<Overlap>().expect("an overlap");
        assert_eq!(o.halo, vec![(4, 4), (4, 4)]);
        // Chunks of 10 with a halo of 4 reach one chunk each way: at
        // most three rows of the 4 x 3 chunk grid are held.
        assert_eq!(o.window, window_chunks(&o.grid, &o.halo));
        assert_eq!(o.window, 9);
        // The window of f32 chunks of 10 x 10, and the block with its halo.
        let want = o.window * 400 + 18 * 18 * 4;
        assert_eq!(ov.mem.working, want);
        assert_eq!(
            o.describe(),
            format!(
                "halo [(4, 4), (4, 4)] from a sliding window of at most {} chunks",
                o.window
            )
        );
    }

    #[test]
    fn it_sends_the_halo_it_adds() {
        let g = ChunkGrid::new(vec![20, 20], vec![5, 5]).expect("grid");
        let o = Overlap::new(g.clone(), vec![(1, 2), (0, 0)]);
        assert_eq!(o.sends_halo(), Some(&[(1, 2), (0, 0)][..]));
        assert!(o.halo().is_none());
        let Exec::Window(w) = o.exec() else {
            panic!("a window")
        };
        assert_eq!(w.regrid, Regrid::new(g.clone(), g, vec![(1, 2), (0, 0)]));
        assert!(w.drop.is_empty());
        assert!(o
            .over_budget("k")
            .is_some_and(|a| a.contains("\"k\" its halo")));
    }
}
