//! numcodecs' `lz4` codec (`{"id": "lz4", "acceleration": 1}` in Zarr v2,
//! `numcodecs.lz4` in Zarr v3), which zarrs does not have.
//!
//! numcodecs stores a chunk as its decoded length (4 bytes, little-endian)
//! followed by one LZ4 block: exactly lz4_flex's "size prepended" block
//! format. `acceleration` only trades ratio for speed when encoding (LZ4's
//! fast mode); lz4_flex has no such knob, so it is kept in the metadata as
//! written and every value decodes the same.
//!
//! Registered through zarrs' runtime codec registry, once per process,
//! before the first array is opened ([`register`]).

use std::borrow::Cow;
use std::sync::{Arc, Once};

use serde::{Deserialize, Serialize};
use zarrs::array::codec::api::{
    BytesRepresentation, BytesToBytesCodecTraits, Codec, CodecError, CodecMetadataOptions,
    CodecOptions, CodecRuntimePluginV2, CodecRuntimePluginV3, CodecTraits,
    PartialDecoderCapability, PartialEncoderCapability, RecommendedConcurrency,
};
use zarrs::array::ArrayBytesRaw;
use zarrs::metadata::Configuration;
use zarrs::plugin::{ExtensionName, PluginCreateError, ZarrVersion};

/// The codec's name in Zarr v2 metadata (numcodecs' id).
pub const NAME_V2: &str = "lz4";
/// Its name in Zarr v3 metadata (as zarr-python 3 writes numcodecs codecs).
pub const NAME_V3: &str = "numcodecs.lz4";

/// The configuration as numcodecs writes it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Lz4Configuration {
    #[serde(default = "one")]
    pub acceleration: i32,
}

fn one() -> i32 {
    1
}

/// numcodecs' LZ4: a 4-byte little-endian length, then one LZ4 block.
#[derive(Debug, Clone, Copy)]
pub struct Lz4Codec {
    acceleration: i32,
}

impl Lz4Codec {
    pub fn new(acceleration: i32) -> Self {
        Lz4Codec { acceleration }
    }

    fn from_configuration(cfg: &Lz4Configuration) -> Result<Codec, PluginCreateError> {
        Ok(Codec::BytesToBytes(Arc::new(Lz4Codec::new(
            cfg.acceleration,
        ))))
    }
}

/// Makes `lz4` (v2) and `numcodecs.lz4` (v3) known to zarrs for every
/// array opened from now on in this process.
pub(crate) fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        zarrs::array::codec::api::register_codec_v3(CodecRuntimePluginV3::new(
            |name| name == NAME_V3,
            |metadata| Lz4Codec::from_configuration(&metadata.to_typed_configuration()?),
        ));
        zarrs::array::codec::api::register_codec_v2(CodecRuntimePluginV2::new(
            |name| name == NAME_V2,
            |metadata| Lz4Codec::from_configuration(&metadata.to_typed_configuration()?),
        ));
    });
}

/// Decodes a numcodecs LZ4 chunk, checking its stated length.
pub(crate) fn decode(encoded: &[u8]) -> Result<Vec<u8>, String> {
    lz4_flex::block::decompress_size_prepended(encoded)
        .map_err(|e| format!("not a numcodecs lz4 chunk: {e}"))
}

impl ExtensionName for Lz4Codec {
    fn name(&self, version: ZarrVersion) -> Option<Cow<'static, str>> {
        Some(Cow::Borrowed(match version {
            ZarrVersion::V2 => NAME_V2,
            ZarrVersion::V3 => NAME_V3,
        }))
    }
}

impl CodecTraits for Lz4Codec {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn configuration(
        &self,
        _version: ZarrVersion,
        _options: &CodecMetadataOptions,
    ) -> Option<Configuration> {
        let cfg = Lz4Configuration {
            acceleration: self.acceleration,
        };
        match serde_json::to_value(cfg) {
            Ok(serde_json::Value::Object(m)) => Some(Configuration::from(m)),
            _ => None,
        }
    }

    fn partial_decoder_capability(&self) -> PartialDecoderCapability {
        PartialDecoderCapability {
            partial_read: false,
            partial_decode: false,
        }
    }

    fn partial_encoder_capability(&self) -> PartialEncoderCapability {
        PartialEncoderCapability {
            partial_encode: false,
        }
    }
}

impl BytesToBytesCodecTraits for Lz4Codec {
    fn into_dyn(self: Arc<Self>) -> Arc<dyn BytesToBytesCodecTraits> {
        self as Arc<dyn BytesToBytesCodecTraits>
    }

    fn recommended_concurrency(
        &self,
        _decoded_representation: &BytesRepresentation,
    ) -> Result<RecommendedConcurrency, CodecError> {
        Ok(RecommendedConcurrency::new_maximum(1))
    }

    fn encoded_representation(
        &self,
        decoded_representation: &BytesRepresentation,
    ) -> BytesRepresentation {
        decoded_representation
            .size()
            .map_or(BytesRepresentation::UnboundedSize, |size| {
                BytesRepresentation::BoundedSize(
                    4 + lz4_flex::block::get_maximum_output_size(size as usize) as u64,
                )
            })
    }

    fn encode<'a>(
        &self,
        decoded_value: ArrayBytesRaw<'a>,
        _options: &CodecOptions,
    ) -> Result<ArrayBytesRaw<'a>, CodecError> {
        if u32::try_from(decoded_value.len()).is_err() {
            return Err(CodecError::Other(format!(
                "numcodecs lz4 holds at most 4 GiB per chunk, not {} bytes",
                decoded_value.len()
            )));
        }
        Ok(Cow::Owned(lz4_flex::block::compress_prepend_size(
            &decoded_value,
        )))
    }

    fn decode<'a>(
        &self,
        encoded_value: ArrayBytesRaw<'a>,
        _decoded_representation: &BytesRepresentation,
        _options: &CodecOptions,
    ) -> Result<ArrayBytesRaw<'a>, CodecError> {
        decode(&encoded_value)
            .map(Cow::Owned)
            .map_err(CodecError::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_numcodecs_layout_round_trips_and_damage_is_refused() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 7) as u8).collect();
        let enc = lz4_flex::block::compress_prepend_size(&data);
        // numcodecs' header: the decoded length, little-endian.
        assert_eq!(&enc[..4], &5000u32.to_le_bytes());
        assert_eq!(decode(&enc).expect("decodes"), data);
        let mut short = enc.clone();
        short.truncate(enc.len() - 3);
        assert!(decode(&short).is_err());
        let cfg: Lz4Configuration = serde_json::from_str("{}").expect("default");
        assert_eq!(cfg.acceleration, 1);
    }
}
