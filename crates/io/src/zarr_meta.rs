//! The metadata of the arrays blockflow writes, built with zarrs' own
//! types: v3 arrays through zarrs' `ArrayBuilder` (codec objects, the
//! sharding codec, dimension names), v2 arrays as zarrs'
//! `ArrayMetadataV2` with each compressor's v2 configuration taken from
//! the zarrs codec itself. Both are stored without zarrs' `_zarrs`
//! attribute, and a v2 `.zarray` holds only the keys of the v2 spec
//! (zarrs' v2 serializer adds `node_type`, which is no v2 key).

use std::sync::Arc;

use blockflow_core::DType;
use serde_json::Value;
use zarrs::array::codec::{
    BloscCodec, BloscCompressionLevel, BloscCompressor, BloscShuffleMode, BytesCodec, Crc32cCodec,
    GzipCodec, ZlibCodec, ZlibCompressionLevel, ZstdCodec,
};
use zarrs::array::{
    data_type, Array, ArrayBuilder, ArrayMetadata, ArrayMetadataOptions, ArrayMetadataV2,
    BytesToBytesCodecTraits, CodecMetadataOptions, DataType, Endianness, FillValue,
};
use zarrs::metadata::v2::{DataTypeMetadataV2, MetadataV2};
use zarrs::plugin::ZarrVersion;
use zarrs::storage::{ReadableWritableStorageTraits, StoreKey, WritableStorageTraits};

use crate::lz4_codec::Lz4Codec;

/// The xarray attribute naming a v2 array's axes.
pub const ARRAY_DIMENSIONS: &str = "_ARRAY_DIMENSIONS";

/// Compression of a written array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Zstd,
    Blosc,
    Gzip,
    /// zlib (numcodecs' `zlib`; `numcodecs.zlib` in v3).
    Zlib,
    /// numcodecs' `lz4` (`numcodecs.lz4` in v3).
    Lz4,
}

impl Codec {
    pub const NAMES: [&'static str; 6] = ["zstd", "blosc", "gzip", "zlib", "lz4", "none"];
    pub fn parse(s: &str) -> Option<Codec> {
        match s {
            "none" => Some(Codec::None),
            "zstd" => Some(Codec::Zstd),
            "blosc" => Some(Codec::Blosc),
            "gzip" => Some(Codec::Gzip),
            "zlib" => Some(Codec::Zlib),
            "lz4" => Some(Codec::Lz4),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Zstd => "zstd",
            Codec::Blosc => "blosc",
            Codec::Gzip => "gzip",
            Codec::Zlib => "zlib",
            Codec::Lz4 => "lz4",
        }
    }
}

/// blosc's inner compressor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BloscCname {
    Lz4,
    Lz4hc,
    Blosclz,
    #[default]
    Zstd,
    Zlib,
}

impl BloscCname {
    pub const NAMES: [&'static str; 5] = ["zstd", "lz4", "lz4hc", "blosclz", "zlib"];
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "lz4" => Some(BloscCname::Lz4),
            "lz4hc" => Some(BloscCname::Lz4hc),
            "blosclz" => Some(BloscCname::Blosclz),
            "zstd" => Some(BloscCname::Zstd),
            "zlib" => Some(BloscCname::Zlib),
            _ => None,
        }
    }
    fn zarrs(self) -> BloscCompressor {
        match self {
            BloscCname::Lz4 => BloscCompressor::LZ4,
            BloscCname::Lz4hc => BloscCompressor::LZ4HC,
            BloscCname::Blosclz => BloscCompressor::BloscLZ,
            BloscCname::Zstd => BloscCompressor::Zstd,
            BloscCname::Zlib => BloscCompressor::Zlib,
        }
    }
}

/// blosc's shuffle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shuffle {
    None,
    #[default]
    Byte,
    Bit,
}

impl Shuffle {
    pub const NAMES: [&'static str; 3] = ["shuffle", "bitshuffle", "noshuffle"];
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "shuffle" => Some(Shuffle::Byte),
            "bitshuffle" => Some(Shuffle::Bit),
            "noshuffle" => Some(Shuffle::None),
            _ => None,
        }
    }
}

/// The codec details beyond the compressor and its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Encoding {
    /// blosc's compressor and shuffle (codec `blosc` only).
    pub cname: BloscCname,
    pub shuffle: Shuffle,
    /// A crc32c checksum after the compressor (Zarr v3 only).
    pub checksum: bool,
    /// Big-endian values (the v3 `bytes` codec's `endian`, the v2 dtype's `>`).
    pub big_endian: bool,
}

/// The zarrs data type of `d`.
pub fn zarrs_data_type(d: DType) -> DataType {
    match d {
        DType::Bool => data_type::bool(),
        DType::U8 => data_type::uint8(),
        DType::U16 => data_type::uint16(),
        DType::U32 => data_type::uint32(),
        DType::I16 => data_type::int16(),
        DType::I32 => data_type::int32(),
        DType::I64 => data_type::int64(),
        DType::F32 => data_type::float32(),
        DType::F64 => data_type::float64(),
    }
}

/// Zero (false) in `d`: the fill value of every array blockflow writes.
fn zero(d: DType) -> FillValue {
    match d {
        DType::Bool => FillValue::from(false),
        DType::U8 => FillValue::from(0u8),
        DType::U16 => FillValue::from(0u16),
        DType::U32 => FillValue::from(0u32),
        DType::I16 => FillValue::from(0i16),
        DType::I32 => FillValue::from(0i32),
        DType::I64 => FillValue::from(0i64),
        DType::F32 => FillValue::from(0f32),
        DType::F64 => FillValue::from(0f64),
    }
}

/// What [`build`] needs of the options (see [`crate::zarr::ZarrWriteOptions`]).
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    pub zarr_format: u8,
    pub dtype: DType,
    pub shape: &'a [u64],
    pub chunks: &'a [u64],
    pub shards: Option<&'a [u64]>,
    pub codec: Codec,
    pub level: i32,
    pub encoding: Encoding,
    pub names: &'a [String],
    pub attributes: &'a serde_json::Map<String, Value>,
    /// Zarr v2 chunk keys `0/1` (`dimension_separator: "/"`, as OME-Zarr
    /// 0.4 requires) instead of `0.1`.
    pub v2_slash: bool,
}

/// The compressor (none for `Codec::None`).
fn compressor(s: &Spec<'_>) -> Result<Option<Arc<dyn BytesToBytesCodecTraits>>, String> {
    let level = s.level;
    let small = |max: i32| -> Result<u8, String> {
        u8::try_from(level)
            .ok()
            .filter(|&l| i32::from(l) <= max)
            .ok_or_else(|| format!("{} levels are 0..={max}, not {level}", s.codec.name()))
    };
    Ok(Some(match s.codec {
        Codec::None => return Ok(None),
        Codec::Zstd => Arc::new(ZstdCodec::new(level, false)),
        Codec::Gzip => Arc::new(GzipCodec::new(u32::from(small(9)?)).map_err(|e| e.to_string())?),
        Codec::Zlib => Arc::new(ZlibCodec::new(
            ZlibCompressionLevel::try_from(u32::from(small(9)?))
                .map_err(|l| format!("zlib levels are 0..=9, not {l}"))?,
        )),
        Codec::Lz4 => Arc::new(Lz4Codec::new(1)),
        Codec::Blosc => {
            let clevel = BloscCompressionLevel::try_from(small(9)?)
                .map_err(|l| format!("blosc levels are 0..=9, not {l}"))?;
            let shuffle = match s.encoding.shuffle {
                Shuffle::None => BloscShuffleMode::NoShuffle,
                Shuffle::Byte => BloscShuffleMode::Shuffle,
                Shuffle::Bit => BloscShuffleMode::BitShuffle,
            };
            Arc::new(
                BloscCodec::new(
                    s.encoding.cname.zarrs(),
                    clevel,
                    None,
                    shuffle,
                    Some(s.dtype.size()),
                )
                .map_err(|e| e.to_string())?,
            )
        }
    }))
}

/// The array `s` describes, over `store` (its metadata not yet stored:
/// see [`store_metadata`]).
pub fn build<S: ?Sized + ReadableWritableStorageTraits + 'static>(
    store: Arc<S>,
    s: &Spec<'_>,
) -> Result<Array<S>, String> {
    let compressor = compressor(s)?;
    let dt = zarrs_data_type(s.dtype);
    let fill = zero(s.dtype);
    let mut array = if s.zarr_format == 2 {
        if s.shards.is_some() {
            return Err("sharding is a Zarr v3 codec; write `format = 3` to shard".into());
        }
        if s.encoding.checksum {
            return Err("a crc32c checksum is a Zarr v3 codec; write `format = 3` for it".into());
        }
        let mut name = dt
            .name(ZarrVersion::V2)
            .ok_or("the data type has no Zarr v2 name")?
            .into_owned();
        if s.encoding.big_endian && name.starts_with('<') {
            name.replace_range(0..1, ">");
        }
        let fill = dt.metadata_fill_value(&fill).map_err(|e| e.to_string())?;
        let compressor = compressor.map(|c| v2_metadata(&*c)).transpose()?;
        let chunks = s
            .chunks
            .iter()
            .map(|&c| std::num::NonZeroU64::new(c).ok_or("a chunk length of 0"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut attributes = s.attributes.clone();
        attributes.insert(ARRAY_DIMENSIONS.into(), Value::from(s.names.to_vec()));
        let meta = ArrayMetadataV2::new(
            s.shape.to_vec(),
            chunks,
            DataTypeMetadataV2::Simple(name),
            fill,
            compressor,
            None,
        )
        .with_attributes(attributes);
        let meta = if s.v2_slash {
            meta.with_dimension_separator(zarrs::metadata::ChunkKeySeparator::Slash)
        } else {
            meta
        };
        Array::new_with_metadata(store, "/", ArrayMetadata::V2(meta)).map_err(|e| e.to_string())?
    } else {
        let endian = if s.encoding.big_endian {
            Endianness::Big
        } else {
            Endianness::Little
        };
        let mut b2b: Vec<Arc<dyn BytesToBytesCodecTraits>> = compressor.into_iter().collect();
        if s.encoding.checksum {
            b2b.push(Arc::new(Crc32cCodec::new()));
        }
        let grid = s.shards.unwrap_or(s.chunks).to_vec();
        let mut b = ArrayBuilder::new(s.shape.to_vec(), grid, dt, fill);
        b.array_to_bytes_codec(Arc::new(BytesCodec::new(Some(endian))))
            .bytes_to_bytes_codecs(b2b)
            .dimension_names(Some(s.names.iter().map(String::as_str)))
            .attributes(s.attributes.clone());
        if s.shards.is_some() {
            b.subchunk_shape(Some(s.chunks.to_vec()));
        }
        b.build(store, "/").map_err(|e| e.to_string())?
    };
    array.set_metadata_options(ArrayMetadataOptions::default().with_include_zarrs_metadata(false));
    Ok(array)
}

/// A zarrs codec's v2 metadata (`{"id": ..., its v2 configuration}`).
fn v2_metadata(c: &dyn BytesToBytesCodecTraits) -> Result<MetadataV2, String> {
    let id = c
        .name(ZarrVersion::V2)
        .ok_or("the codec has no Zarr v2 form")?;
    let mut m: serde_json::Map<String, Value> = c
        .configuration(ZarrVersion::V2, &CodecMetadataOptions::default())
        .map(Into::into)
        .unwrap_or_default();
    m.insert("id".into(), Value::from(id.into_owned()));
    serde_json::from_value(Value::Object(m)).map_err(|e| e.to_string())
}

/// Stores the array's metadata (atomically, through `store`): zarrs'
/// own writer for v3; for v2 the same document less zarrs' `node_type`
/// key, in `.zarray`, and the attributes in `.zattrs`.
pub fn store_metadata<S, W>(array: &Array<S>, store: &W) -> Result<(), String>
where
    S: ?Sized + ReadableWritableStorageTraits + 'static,
    W: ?Sized + WritableStorageTraits,
{
    let meta =
        array.metadata_opt(&ArrayMetadataOptions::default().with_include_zarrs_metadata(false));
    match meta {
        ArrayMetadata::V3(_) => array
            .store_metadata_opt(&ArrayMetadataOptions::default().with_include_zarrs_metadata(false))
            .map_err(|e| e.to_string()),
        ArrayMetadata::V2(mut m) => {
            let attributes = std::mem::take(&mut m.attributes);
            let mut doc = serde_json::to_value(&m).map_err(|e| e.to_string())?;
            if let Value::Object(o) = &mut doc {
                o.remove("node_type");
            }
            let put = |key: &str, v: &Value| -> Result<(), String> {
                let text = serde_json::to_vec_pretty(v).map_err(|e| e.to_string())?;
                let key = StoreKey::new(key).map_err(|e| e.to_string())?;
                store.set(&key, text.into()).map_err(|e| e.to_string())
            };
            if !attributes.is_empty() {
                put(".zattrs", &Value::Object(attributes))?;
            }
            put(".zarray", &doc)
        }
    }
}
