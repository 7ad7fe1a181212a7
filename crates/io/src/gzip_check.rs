//! A `gzip` codec that rejects a chunk with bytes after its gzip stream.
//!
//! zarrs decodes `gzip` with flate2's `GzDecoder`, which stops at the end
//! of the first gzip member and ignores whatever follows, so a chunk file
//! with trailing garbage (a botched copy, an append to the wrong file)
//! reads as if it were whole. zarr-python (numcodecs, Python's `gzip`)
//! rejects it. This codec decodes as Python does: gzip members one after
//! another, zero padding between or after them, and anything else an
//! error. Encoding, metadata and everything else are zarrs' own codec's.
//!
//! It replaces zarrs' `gzip` through zarrs' runtime codec registry, once
//! per process, before the first array is opened ([`register`]).

use std::borrow::Cow;
use std::io::Read;
use std::sync::{Arc, Once};

use zarrs::array::codec::api::{
    BytesRepresentation, BytesToBytesCodecTraits, Codec, CodecError, CodecMetadataOptions,
    CodecOptions, CodecRuntimePluginV2, CodecRuntimePluginV3, CodecTraits,
    PartialDecoderCapability, PartialEncoderCapability, RecommendedConcurrency,
};
use zarrs::array::codec::{GzipCodec, GzipCodecConfiguration};
use zarrs::array::ArrayBytesRaw;
use zarrs::metadata::Configuration;
use zarrs::plugin::{ExtensionName, PluginCreateError, ZarrVersion};

/// zarrs' gzip codec, with a decoder that checks the whole chunk is gzip.
#[derive(Debug)]
pub(crate) struct CheckedGzip {
    inner: Arc<GzipCodec>,
}

impl CheckedGzip {
    fn from_configuration(cfg: &GzipCodecConfiguration) -> Result<Codec, PluginCreateError> {
        let inner = Arc::new(GzipCodec::new_with_configuration(cfg)?);
        Ok(Codec::BytesToBytes(Arc::new(CheckedGzip { inner })))
    }
}

/// Replaces zarrs' `gzip` codec (Zarr v2 and v3) by [`CheckedGzip`] for
/// every array opened from now on in this process.
pub(crate) fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        zarrs::array::codec::api::register_codec_v3(CodecRuntimePluginV3::new(
            |name| name == "gzip",
            |metadata| CheckedGzip::from_configuration(&metadata.to_typed_configuration()?),
        ));
        zarrs::array::codec::api::register_codec_v2(CodecRuntimePluginV2::new(
            |name| name == "gzip",
            |metadata| CheckedGzip::from_configuration(&metadata.to_typed_configuration()?),
        ));
    });
}

/// Decodes `encoded` as Python's `gzip.decompress` does: one or more
/// gzip members, each optionally followed by zero bytes; any other
/// trailing byte is an error saying where it is.
pub(crate) fn gunzip_all(encoded: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(capacity);
    let mut rest = encoded;
    loop {
        let offset = encoded.len() - rest.len();
        let mut member = flate2::bufread::GzDecoder::new(rest);
        member.read_to_end(&mut out).map_err(|e| {
            std::io::Error::new(e.kind(), format!("gzip member at byte {offset}: {e}"))
        })?;
        rest = member.into_inner();
        match rest.iter().position(|&b| b != 0) {
            None => return Ok(out),
            Some(z) => rest = &rest[z..],
        }
        if !rest.starts_with(&[0x1f, 0x8b]) {
            let at = encoded.len() - rest.len();
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} bytes of trailing data after the gzip stream, at byte {at} of {} (not another gzip member); the chunk file is damaged",
                    rest.len(),
                    encoded.len()
                ),
            ));
        }
    }
}

impl ExtensionName for CheckedGzip {
    fn name(&self, version: ZarrVersion) -> Option<Cow<'static, str>> {
        self.inner.name(version)
    }
}

impl CodecTraits for CheckedGzip {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn configuration(
        &self,
        version: ZarrVersion,
        options: &CodecMetadataOptions,
    ) -> Option<Configuration> {
        self.inner.configuration(version, options)
    }

    fn partial_decoder_capability(&self) -> PartialDecoderCapability {
        self.inner.partial_decoder_capability()
    }

    fn partial_encoder_capability(&self) -> PartialEncoderCapability {
        self.inner.partial_encoder_capability()
    }
}

impl BytesToBytesCodecTraits for CheckedGzip {
    fn into_dyn(self: Arc<Self>) -> Arc<dyn BytesToBytesCodecTraits> {
        self as Arc<dyn BytesToBytesCodecTraits>
    }

    fn recommended_concurrency(
        &self,
        decoded_representation: &BytesRepresentation,
    ) -> Result<RecommendedConcurrency, CodecError> {
        self.inner.recommended_concurrency(decoded_representation)
    }

    fn encoded_representation(
        &self,
        decoded_representation: &BytesRepresentation,
    ) -> BytesRepresentation {
        self.inner.encoded_representation(decoded_representation)
    }

    fn encode<'a>(
        &self,
        decoded_value: ArrayBytesRaw<'a>,
        options: &CodecOptions,
    ) -> Result<ArrayBytesRaw<'a>, CodecError> {
        self.inner.encode(decoded_value, options)
    }

    fn decode<'a>(
        &self,
        encoded_value: ArrayBytesRaw<'a>,
        decoded_representation: &BytesRepresentation,
        _options: &CodecOptions,
    ) -> Result<ArrayBytesRaw<'a>, CodecError> {
        let capacity = decoded_representation.size().unwrap_or(0) as usize;
        let out =
            gunzip_all(&encoded_value, capacity).map_err(|e| CodecError::Other(e.to_string()))?;
        Ok(Cow::Owned(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(5));
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    #[test]
    fn whole_members_and_zero_padding_decode_and_garbage_is_refused() {
        let a = gz(b"hello ");
        let b = gz(b"world");
        assert_eq!(gunzip_all(&a, 0).expect("one"), b"hello ");
        let two = [a.clone(), b].concat();
        assert_eq!(gunzip_all(&two, 0).expect("two"), b"hello world");
        let padded = [a.clone(), vec![0; 7]].concat();
        assert_eq!(gunzip_all(&padded, 0).expect("padded"), b"hello ");
        let garbage = [a.clone(), b"GARBAGE".to_vec()].concat();
        let e = gunzip_all(&garbage, 0).expect_err("garbage").to_string();
        assert!(e.contains("7 bytes of trailing data"), "{e}");
        // A second "member" that is not gzip after its magic.
        let bad = [a, vec![0x1f, 0x8b, 1, 2, 3]].concat();
        assert!(gunzip_all(&bad, 0).is_err());
    }
}
