//! blockflow core: the types every other crate speaks.
//!
//! Nothing here touches a file, a channel or a thread. A [`Chunk`] is one
//! block of a larger array: its grid index, the region it covers in global
//! coordinates, the halo it borrows from its neighbours, and its data as an
//! [`ArrayData`] (an enum over typed `ndarray::ArrayD`).

mod array;
mod dtype;
mod grid;
mod meter;

pub use array::{ArrayData, ArrayKind};
pub use dtype::{DType, Element};
pub use grid::{ChunkGrid, GridError, Region, MAX_ELEMENTS};
pub use meter::{Meter, Tracked};

use std::sync::Arc;

/// One block of an array flowing between stages.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Grid index of the chunk (one entry per axis).
    pub index: Vec<u64>,
    /// The region of the array the chunk's core (without halo) covers.
    pub region: Region,
    /// Halo borrowed from neighbours on each side of each axis: `(before, after)`.
    pub halo: Vec<(u64, u64)>,
    /// The data, shared between consumers when a stage fans out.
    pub data: Arc<Tracked>,
}

impl Chunk {
    /// A chunk with no halo whose data is accounted in `meter`.
    pub fn new(index: Vec<u64>, region: Region, data: ArrayData, meter: &Arc<Meter>) -> Self {
        let halo = vec![(0, 0); region.ndim()];
        Chunk {
            index,
            region,
            halo,
            data: Arc::new(Tracked::new(data, meter)),
        }
    }

    /// The array data of the chunk.
    pub fn array(&self) -> &ArrayData {
        self.data.get()
    }

    /// Bytes held by the chunk's data.
    pub fn nbytes(&self) -> u64 {
        self.data.get().nbytes()
    }
}

/// A message on an edge of the graph.
#[derive(Debug, Clone)]
pub enum Msg {
    /// One chunk.
    Data(Chunk),
    /// The producer has sent every chunk it will send.
    End,
}

/// Shape and element type of an array, and the grid it streams in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArraySpec {
    pub dtype: DType,
    pub grid: ChunkGrid,
    /// The axes' names, where known (read from a Zarr array's
    /// `dimension_names`, given to a writer, kept by the stages that keep
    /// axes); None: unnamed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
}

impl ArraySpec {
    /// A stream of `dtype` over `grid`, its axes unnamed.
    pub fn new(dtype: DType, grid: ChunkGrid) -> Self {
        ArraySpec {
            dtype,
            grid,
            names: None,
        }
    }
    pub fn shape(&self) -> &[u64] {
        self.grid.shape()
    }
    /// Bytes of the largest chunk of the grid.
    pub fn chunk_bytes(&self) -> u64 {
        self.grid.chunk_elements() * self.dtype.size() as u64
    }
    /// Bytes of the whole array.
    pub fn total_bytes(&self) -> u64 {
        self.grid.total_elements() * self.dtype.size() as u64
    }
}

/// Formats a byte count as a human size ("1.50 GiB").
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// Parses a human size such as `"512 MiB"`, `"2GB"`, `"1.5 GiB"` or `"4096"` into bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{text}` is not a size; write e.g. \"512 MiB\" or \"2 GiB\""))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0f64.powi(4),
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}`; use B, KB, MB, GB, KiB, MiB or GiB"
            ))
        }
    };
    Ok((num * mult).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_bytes("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
        assert_eq!(human_bytes(512 << 20), "512.00 MiB");
        assert_eq!(human_bytes(12), "12 B");
    }
}
