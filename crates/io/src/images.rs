//! Image stacks: a sorted glob of PNG, JPEG or TIFF files, each decoded to
//! an `(H, W, C)` array (`C = 1` for gray), and a generator of the seed's
//! input (fluorescence-microscopy-like RGB cells) so that every config runs
//! without a download.
//!
//! - [`list_images`]: a glob whose wildcards (`*`, `?`, `[abc]`, `[a-z]`,
//!   `[!abc]`) are in the file name only, sorted as Python's
//!   `sorted(glob.glob(pattern))` sorts (byte order of the path);
//! - [`decode_image`]: the format is chosen by the file's first bytes, not its
//!   extension. PNG: palettes and low bit depths expanded (a `tRNS` chunk
//!   becomes an alpha channel), 8 bit to `uint8`, 16 bit to `uint16`; gray,
//!   gray+alpha, RGB, RGBA. JPEG (zune-jpeg, baseline and progressive, strict
//!   mode so that a truncated file is an error as in Pillow): gray stays one
//!   channel, everything else becomes RGB `uint8`; decoders differ from
//!   libjpeg by 1–2 levels. TIFF (the `tiff` crate: uncompressed, LZW,
//!   deflate, PackBits): the first page, 8/16/32/64-bit samples (`int8`
//!   widened to `int16`), chunky or planar, gray, gray+alpha, RGB, RGBA or
//!   any number of bands;
//! - [`image_info`]: shape and dtype from the header alone, for planning;
//! - [`write_png`]: `uint8`/`uint16` `(H, W, C)` arrays as PNG, atomically;
//! - [`write_cell_images`]: the deterministic generator.

use std::io::{BufRead, BufReader, Cursor, Read, Seek};
use std::path::{Path, PathBuf};

use blockflow_core::{ArrayData, DType};
use ndarray::{ArrayD, IxDyn};

use crate::blocks::write_atomic_bytes;
use crate::IoError;

// ---------------------------------------------------------------------------
// Glob

/// A file-name pattern with fnmatch's rules, through the `glob` crate's
/// matcher: `*`, `?`, `[seq]`, `[!seq]` (a `]` right after `[` or `[!` is
/// literal, `a-z` is a range). Where fnmatch and the crate differ, the
/// pattern is first written the way the crate reads fnmatch's meaning: a
/// run of `*` is one `*` (the crate's `**` means folders), and a `[` that
/// never closes is a literal `[` (the crate refuses it).
fn compile_pattern(p: &str) -> Result<glob::Pattern, String> {
    let mut chars: Vec<char> = Vec::with_capacity(p.len());
    for c in p.chars() {
        if !(c == '*' && chars.last() == Some(&'*')) {
            chars.push(c);
        }
    }
    loop {
        let text: String = chars.iter().collect();
        match glob::Pattern::new(&text) {
            Ok(pattern) => return Ok(pattern),
            // The error is at an unclosed `[`: take it literally, `[[]`.
            Err(e) if chars.get(e.pos) == Some(&'[') => {
                chars.splice(e.pos..=e.pos, ['[', '[', ']']);
            }
            Err(e) => return Err(format!("not a glob pattern: {e}")),
        }
    }
}

/// Whether `name` matches the compiled pattern (the whole name,
/// case-sensitive; leading dots are the caller's).
fn matches(pattern: &glob::Pattern, name: &str) -> bool {
    pattern.matches_with(
        name,
        glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        },
    )
}

/// Whether the file name `name` matches the glob `pattern` (`*`, `?`,
/// `[...]`; the whole name, case-sensitive).
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    compile_pattern(pattern).is_ok_and(|p| matches(&p, name))
}

fn has_magic(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The files matching `pattern`, sorted as Python's `sorted(glob.glob(...))`.
///
/// Wildcards are allowed in the file name only; the directory part is taken
/// literally. As in `glob`, a name starting with `.` matches only a pattern
/// starting with `.`. Every entry that matches must be a file (or a link
/// to one): a directory or a dangling link that matches is an error naming
/// it, never silently left out (that would shift every later index). No
/// match is an error naming the pattern.
pub fn list_images(pattern: &str) -> Result<Vec<PathBuf>, IoError> {
    let no_match = || IoError::NoMatch {
        pattern: pattern.to_string(),
    };
    let (dir, name) = match pattern.rfind('/') {
        Some(0) => ("/", &pattern[1..]),
        Some(i) => (&pattern[..i], &pattern[i + 1..]),
        None => ("", pattern),
    };
    if !has_magic(name) {
        let p = PathBuf::from(pattern);
        return if p.is_file() {
            Ok(vec![p])
        } else {
            Err(no_match())
        };
    }
    let tokens = compile_pattern(name).map_err(|why| IoError::Store {
        path: PathBuf::from(pattern),
        why,
    })?;
    let read_from = if dir.is_empty() { "." } else { dir };
    let entries = match std::fs::read_dir(read_from) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(no_match()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Err(no_match()),
        Err(source) => {
            return Err(IoError::Os {
                path: PathBuf::from(read_from),
                source,
            })
        }
    };
    let hidden_ok = name.starts_with('.');
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| IoError::Os {
            path: PathBuf::from(read_from),
            source,
        })?;
        let file_name = entry.file_name();
        let lossy = file_name.to_string_lossy();
        if (!hidden_ok && lossy.starts_with('.')) || !matches(&tokens, &lossy) {
            continue;
        }
        let path = if dir.is_empty() {
            PathBuf::from(&file_name)
        } else {
            Path::new(dir).join(&file_name)
        };
        if !path.is_file() {
            let what = match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(&path) {
                    Ok(t) => format!("a symbolic link to {}, which is not a file", t.display()),
                    Err(_) => "a symbolic link that cannot be read".into(),
                },
                Ok(m) if m.is_dir() => "a directory".into(),
                Ok(_) => "not a regular file".into(),
                Err(e) => e.to_string(),
            };
            return Err(IoError::Store {
                path,
                why: format!(
                    "matches the pattern {pattern} but is {what}; every match must be an image file (move it away or narrow the pattern)"
                ),
            });
        }
        out.push(path);
    }
    if out.is_empty() {
        return Err(no_match());
    }
    out.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    Ok(out)
}

// ---------------------------------------------------------------------------
// Decoding

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Png,
    Jpeg,
    Tiff,
}

fn sniff(head: &[u8]) -> Option<Format> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if head.starts_with(b"II*\0")
        || head.starts_with(b"MM\0*")
        || head.starts_with(b"II+\0")
        || head.starts_with(b"MM\0+")
    {
        Some(Format::Tiff)
    } else {
        None
    }
}

fn image_err(path: &Path, why: impl Into<String>) -> IoError {
    IoError::Image {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

fn not_an_image(path: &Path, head: &[u8]) -> IoError {
    let shown: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    image_err(
        path,
        if head.is_empty() {
            "the file is empty, not a PNG, JPEG or TIFF image".to_string()
        } else {
            format!(
                "not a PNG, JPEG or TIFF image (the file starts with bytes {})",
                shown.join(" ")
            )
        },
    )
}

fn os_err(path: &Path) -> impl Fn(std::io::Error) -> IoError + '_ {
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            IoError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            IoError::Os {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

fn hwc<T>(path: &Path, h: usize, w: usize, c: usize, v: Vec<T>) -> Result<ArrayD<T>, IoError> {
    let n = v.len();
    ArrayD::from_shape_vec(IxDyn(&[h, w, c]), v).map_err(|_| {
        image_err(
            path,
            format!("decoded {n} samples for a {h} x {w} x {c} image"),
        )
    })
}

/// Decodes a PNG, JPEG or TIFF file (chosen by its first bytes) to an
/// `(H, W, C)` array.
pub fn decode_image(path: &Path) -> Result<ArrayData, IoError> {
    let bytes = std::fs::read(path).map_err(os_err(path))?;
    decode_image_bytes(path, &bytes)
}

/// [`decode_image`] of bytes already read; `path` only names them in errors.
pub fn decode_image_bytes(path: &Path, bytes: &[u8]) -> Result<ArrayData, IoError> {
    match sniff(bytes) {
        Some(Format::Png) => decode_png(path, bytes),
        Some(Format::Jpeg) => decode_jpeg(path, bytes),
        Some(Format::Tiff) => decode_tiff(path, bytes),
        None => Err(not_an_image(path, bytes)),
    }
}

fn png_decoder<R: BufRead + Seek>(r: R) -> png::Decoder<R> {
    let mut d = png::Decoder::new(r);
    d.set_transformations(png::Transformations::EXPAND);
    d
}

fn png_shape(reader: &png::Reader<impl BufRead + Seek>) -> (Vec<usize>, DType) {
    let info = reader.info();
    let (color, depth) = reader.output_color_type();
    let dtype = if depth == png::BitDepth::Sixteen {
        DType::U16
    } else {
        DType::U8
    };
    (
        vec![info.height as usize, info.width as usize, color.samples()],
        dtype,
    )
}

fn decode_png(path: &Path, bytes: &[u8]) -> Result<ArrayData, IoError> {
    let err = |e: png::DecodingError| image_err(path, format!("PNG: {e}"));
    let mut reader = png_decoder(Cursor::new(bytes)).read_info().map_err(err)?;
    let (shape, dtype) = png_shape(&reader);
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| image_err(path, "PNG: the image is too large"))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(err)?;
    let (h, w, c) = (shape[0], shape[1], shape[2]);
    let line = frame.line_size;
    let row = w * c * if dtype == DType::U16 { 2 } else { 1 };
    let mut packed = Vec::with_capacity(h * row);
    for y in 0..h {
        packed.extend_from_slice(&buf[y * line..y * line + row]);
    }
    Ok(if dtype == DType::U16 {
        let v = packed
            .chunks_exact(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .collect();
        ArrayData::U16(hwc(path, h, w, c, v)?)
    } else {
        ArrayData::U8(hwc(path, h, w, c, packed)?)
    })
}

fn jpeg_options() -> zune_jpeg::zune_core::options::DecoderOptions {
    zune_jpeg::zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX))
}

/// The output colour space for an input one: gray stays gray, the rest is RGB.
fn jpeg_out(
    input: zune_jpeg::zune_core::colorspace::ColorSpace,
) -> zune_jpeg::zune_core::colorspace::ColorSpace {
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    if input == ColorSpace::Luma {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    }
}

fn jpeg_header<T: zune_jpeg::zune_core::bytestream::ZByteReaderTrait>(
    path: &Path,
    d: &mut zune_jpeg::JpegDecoder<T>,
) -> Result<(usize, usize, usize), IoError> {
    d.decode_headers()
        .map_err(|e| image_err(path, format!("JPEG: {e:?}")))?;
    let (w, h) = d
        .dimensions()
        .ok_or_else(|| image_err(path, "JPEG: no frame header"))?;
    let input = d
        .input_colorspace()
        .ok_or_else(|| image_err(path, "JPEG: no frame header"))?;
    let out = jpeg_out(input);
    d.set_options(jpeg_options().jpeg_set_out_colorspace(out));
    Ok((h, w, out.num_components()))
}

fn decode_jpeg(path: &Path, bytes: &[u8]) -> Result<ArrayData, IoError> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), jpeg_options());
    let (h, w, c) = jpeg_header(path, &mut d)?;
    let mut out = vec![0u8; h * w * c];
    d.decode_into(&mut out)
        .map_err(|e| image_err(path, format!("JPEG: {e:?}")))?;
    Ok(ArrayData::U8(hwc(path, h, w, c, out)?))
}

fn tiff_err(path: &Path) -> impl Fn(tiff::TiffError) -> IoError + '_ {
    move |e| image_err(path, format!("TIFF: {e}"))
}

/// Samples per pixel of a TIFF colour type we can return as it is.
fn tiff_channels(path: &Path, ct: tiff::ColorType) -> Result<usize, IoError> {
    use tiff::ColorType as C;
    let (c, bits) = match ct {
        C::Gray(b) => (1, b),
        C::GrayA(b) => (2, b),
        C::RGB(b) => (3, b),
        C::RGBA(b) => (4, b),
        C::Multiband {
            bit_depth,
            num_samples,
        } => (usize::from(num_samples), bit_depth),
        other => {
            return Err(image_err(
                path,
                format!("TIFF: colour type {other:?} is not supported (gray, gray+alpha, RGB, RGBA or bands)"),
            ))
        }
    };
    if !matches!(bits, 8 | 16 | 32 | 64) {
        return Err(image_err(
            path,
            format!("TIFF: {bits}-bit samples are not supported (8, 16, 32 or 64)"),
        ));
    }
    Ok(c)
}

fn tiff_dtype(path: &Path, t: Option<tiff::decoder::DecodingSampleType>) -> Result<DType, IoError> {
    use tiff::decoder::DecodingSampleType as S;
    Ok(match t {
        Some(S::U8) => DType::U8,
        Some(S::U16) => DType::U16,
        Some(S::U32) => DType::U32,
        Some(S::I8) | Some(S::I16) => DType::I16,
        Some(S::I32) => DType::I32,
        Some(S::I64) => DType::I64,
        Some(S::F32) => DType::F32,
        Some(S::F64) => DType::F64,
        other => {
            return Err(image_err(
                path,
                format!("TIFF: sample type {other:?} is not supported"),
            ))
        }
    })
}

fn tiff_header<R: Read + Seek>(
    path: &Path,
    d: &mut tiff::decoder::Decoder<R>,
) -> Result<(usize, usize, usize, DType), IoError> {
    let (w, h) = d.dimensions().map_err(tiff_err(path))?;
    let c = tiff_channels(path, d.colortype().map_err(tiff_err(path))?)?;
    let layout = d.image_buffer_layout().map_err(tiff_err(path))?;
    let dtype = tiff_dtype(path, layout.sample_type)?;
    Ok((h as usize, w as usize, c, dtype))
}

/// Interleaves `planes` planes of `h * w` samples each into `(h, w, planes)`.
fn interleave<T: Copy>(v: Vec<T>, planes: usize) -> Vec<T> {
    if planes <= 1 {
        return v;
    }
    let n = v.len() / planes;
    let mut out = Vec::with_capacity(v.len());
    for i in 0..n {
        for p in 0..planes {
            out.push(v[p * n + i]);
        }
    }
    out
}

fn decode_tiff(path: &Path, bytes: &[u8]) -> Result<ArrayData, IoError> {
    use tiff::decoder::DecodingResult as R;
    let mut d = tiff::decoder::Decoder::new(Cursor::new(bytes)).map_err(tiff_err(path))?;
    let (h, w, c, _) = tiff_header(path, &mut d)?;
    let mut result = R::U8(Vec::new());
    let layout = d
        .read_image_to_buffer(&mut result)
        .map_err(tiff_err(path))?;
    let planes = layout.planes.max(1);
    if planes > 1 && result.as_buffer(0).as_bytes().len() < layout.complete_len {
        return Err(image_err(
            path,
            "TIFF: a planar image too large to read all its planes",
        ));
    }
    let want = h * w * c;
    macro_rules! arr {
        ($v:expr, $variant:ident) => {{
            let mut v = interleave($v, planes);
            v.truncate(want);
            ArrayData::$variant(hwc(path, h, w, c, v)?)
        }};
    }
    Ok(match result {
        R::U8(v) => arr!(v, U8),
        R::U16(v) => arr!(v, U16),
        R::U32(v) => arr!(v, U32),
        R::I8(v) => arr!(v.into_iter().map(i16::from).collect(), I16),
        R::I16(v) => arr!(v, I16),
        R::I32(v) => arr!(v, I32),
        R::I64(v) => arr!(v, I64),
        R::F32(v) => arr!(v, F32),
        R::F64(v) => arr!(v, F64),
        R::U64(_) | R::F16(_) => {
            return Err(image_err(
                path,
                "TIFF: uint64 and float16 samples are not supported",
            ))
        }
    })
}

/// Decodes the images `region.origin[0]..` (`region.shape[0]` of them) of
/// a stack of `files` into one array; every image must be `image` (H, W, C)
/// of `dtype`, else an error names the file.
pub fn read_stack(
    files: &[PathBuf],
    image: &[u64],
    dtype: DType,
    region: &blockflow_core::Region,
) -> Result<ArrayData, IoError> {
    use blockflow_core::{with_dtype, ArrayKind};
    let (first, count) = (region.origin[0] as usize, region.shape[0] as usize);
    let mut shape = vec![count];
    shape.extend(image.iter().map(|&n| n as usize));
    Ok(with_dtype!(dtype, T => {
        let mut out = ndarray::ArrayD::<T>::default(ndarray::IxDyn(&shape));
        for (k, path) in files[first..first + count].iter().enumerate() {
            let img = decode_image(path)?;
            let got: Vec<u64> = img.shape().iter().map(|&n| n as u64).collect();
            match T::unwrap_ref(&img) {
                Some(typed) if got == image => {
                    out.index_axis_mut(ndarray::Axis(0), k).assign(typed)
                }
                _ => {
                    return Err(IoError::Store {
                        path: path.clone(),
                        why: format!(
                            "image {} is {got:?} {}, but the stack's images are {image:?} {dtype} (as its first file)",
                            first + k,
                            img.dtype()
                        ),
                    })
                }
            }
        }
        T::wrap(out)
    }))
}

/// The shape `[H, W, C]` and dtype that [`decode_image`] will give, read
/// from the file's header (PNG up to the first image data, JPEG up to the
/// first scan, TIFF its first directory).
pub fn image_info(path: &Path) -> Result<(Vec<usize>, DType), IoError> {
    let file = std::fs::File::open(path).map_err(os_err(path))?;
    let mut r = BufReader::new(file);
    let head = r.fill_buf().map_err(os_err(path))?.to_vec();
    match sniff(&head) {
        Some(Format::Png) => {
            let reader = png_decoder(r)
                .read_info()
                .map_err(|e| image_err(path, format!("PNG: {e}")))?;
            Ok(png_shape(&reader))
        }
        Some(Format::Jpeg) => {
            let mut d = zune_jpeg::JpegDecoder::new_with_options(r, jpeg_options());
            let (h, w, c) = jpeg_header(path, &mut d)?;
            Ok((vec![h, w, c], DType::U8))
        }
        Some(Format::Tiff) => {
            let mut d = tiff::decoder::Decoder::new(r).map_err(tiff_err(path))?;
            let (h, w, c, dtype) = tiff_header(path, &mut d)?;
            Ok((vec![h, w, c], dtype))
        }
        None => Err(not_an_image(path, &head)),
    }
}

// ---------------------------------------------------------------------------
// Writing

/// PNG bytes of a `uint8` or `uint16` array of shape `(H, W, C)` (C = 1..4)
/// or `(H, W)`; `path` only names it in errors.
pub fn encode_png(path: &Path, image: &ArrayData) -> Result<Vec<u8>, IoError> {
    let shape = image.shape();
    let (h, w, c) = match *shape {
        [h, w] => (h, w, 1),
        [h, w, c] if (1..=4).contains(&c) => (h, w, c),
        _ => {
            return Err(image_err(
                path,
                format!("PNG: cannot write an array of shape {shape:?} (H, W) or (H, W, 1..4)"),
            ))
        }
    };
    let (depth, data) = match image {
        ArrayData::U8(a) => (png::BitDepth::Eight, a.iter().copied().collect::<Vec<u8>>()),
        ArrayData::U16(a) => (
            png::BitDepth::Sixteen,
            a.iter().flat_map(|v| v.to_be_bytes()).collect(),
        ),
        other => {
            return Err(image_err(
                path,
                format!("PNG: cannot write {} data (uint8 or uint16)", other.dtype()),
            ))
        }
    };
    let color = match c {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        _ => png::ColorType::Rgba,
    };
    let (w32, h32) = match (u32::try_from(w), u32::try_from(h)) {
        (Ok(w), Ok(h)) => (w, h),
        _ => return Err(image_err(path, "PNG: the image is too large")),
    };
    let err = |e: png::EncodingError| image_err(path, format!("PNG: {e}"));
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, w32, h32);
        enc.set_color(color);
        enc.set_depth(depth);
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc.write_header().map_err(err)?;
        writer.write_image_data(&data).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    Ok(bytes)
}

/// Writes [`encode_png`]'s bytes to `path` through a temporary file and a rename.
pub fn write_png(path: &Path, image: &ArrayData) -> Result<(), IoError> {
    let bytes = encode_png(path, image)?;
    write_atomic_bytes(path, &bytes)
}

// ---------------------------------------------------------------------------
// The generator

/// splitmix64: a small, fast, well-mixed generator.
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

/// Adds `amp * exp(-((y-cy)^2/(2 sy^2) + (x-cx)^2/(2 sx^2)))` to `plane`
/// within three sigmas of the centre.
#[allow(clippy::too_many_arguments)]
fn add_blob(plane: &mut [f32], h: usize, w: usize, cy: f64, cx: f64, sy: f64, sx: f64, amp: f64) {
    let span = |c: f64, s: f64, n: usize| {
        let lo = (c - 3.0 * s).floor().max(0.0) as usize;
        let hi = ((c + 3.0 * s).ceil().max(0.0) as usize).min(n);
        (lo, hi)
    };
    let (y0, y1) = span(cy, sy, h);
    let (x0, x1) = span(cx, sx, w);
    if y0 >= y1 || x0 >= x1 {
        return;
    }
    let gx: Vec<f32> = (x0..x1)
        .map(|x| (-((x as f64 - cx).powi(2)) / (2.0 * sx * sx)).exp() as f32)
        .collect();
    for y in y0..y1 {
        let gy = (amp * (-((y as f64 - cy).powi(2)) / (2.0 * sy * sy)).exp()) as f32;
        let row = &mut plane[y * w + x0..y * w + x1];
        for (p, g) in row.iter_mut().zip(&gx) {
            *p += gy * g;
        }
    }
}

/// Whether image `i` of the generator is green-dominant by construction
/// (its mean red is then below its mean green).
pub fn cell_image_is_green(seed: u64, i: usize) -> bool {
    image_rng(seed, i).next() & 1 == 0
}

fn image_rng(seed: u64, i: usize) -> SplitMix {
    let mut s = SplitMix(seed ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    s.next();
    s
}

/// One generated `(h, w, 3)` `uint8` image: the `i`-th of [`write_cell_images`].
pub fn cell_image(seed: u64, i: usize, h: usize, w: usize) -> Vec<u8> {
    let mut rng = image_rng(seed, i);
    let green = rng.next() & 1 == 0;
    // Cytoplasm (large, soft) and nuclei (small, bright) intensity planes.
    let mut cyto = vec![0f32; h * w];
    let mut nuc = vec![0f32; h * w];
    let scale = (h.min(w) as f64 / 256.0).max(0.05);
    let cells = 3 + (rng.next() % 10) as usize;
    for _ in 0..cells {
        let cy = rng.range(0.0, h as f64);
        let cx = rng.range(0.0, w as f64);
        let s = rng.range(8.0, 22.0) * scale;
        let sy = s * rng.range(0.7, 1.3);
        let sx = s * rng.range(0.7, 1.3);
        add_blob(&mut cyto, h, w, cy, cx, sy, sx, rng.range(0.5, 1.0));
        let ns = s * rng.range(0.25, 0.45);
        add_blob(
            &mut nuc,
            h,
            w,
            cy + rng.range(-0.3, 0.3) * s,
            cx + rng.range(-0.3, 0.3) * s,
            ns,
            ns * rng.range(0.8, 1.2),
            rng.range(0.4, 0.9),
        );
    }
    // Channel weights of the two planes.
    let (wc, wn): ([f32; 3], [f32; 3]) = if green {
        (
            [rng.range(0.05, 0.3) as f32, 1.0, rng.range(0.0, 0.2) as f32],
            [0.1, 0.35, rng.range(0.3, 0.9) as f32],
        )
    } else if rng.next().is_multiple_of(3) {
        // magenta-ish
        (
            [1.0, rng.range(0.05, 0.3) as f32, rng.range(0.5, 0.9) as f32],
            [0.4, 0.1, 0.6],
        )
    } else {
        (
            [1.0, rng.range(0.1, 0.4) as f32, rng.range(0.0, 0.3) as f32],
            [0.5, 0.2, rng.range(0.2, 0.8) as f32],
        )
    };
    // Brightness: peak levels from about 35 to saturation, log-uniform.
    let gain = (rng.range(35f64.ln(), 300f64.ln())).exp() as f32;
    let background = rng.range(2.0, 12.0) as f32;
    // A few images have a constant (blue) channel, as acquisitions with an
    // unused channel do.
    let constant: Option<(usize, u8)> = match i % 53 {
        7 => Some((2, 0)),
        29 => Some((2, rng.range(1.0, 40.0) as u8)),
        _ => None,
    };
    let mut out = vec![0u8; h * w * 3];
    let mut noise = rng.next() | 1;
    for (p, px) in out.chunks_exact_mut(3).enumerate() {
        // xorshift64 for the per-pixel noise: 3 bits per channel.
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        let (a, b) = (cyto[p], nuc[p]);
        for (ch, v) in px.iter_mut().enumerate() {
            let n = ((noise >> (8 * ch)) & 7) as f32;
            let x = background + n + gain * (wc[ch] * a + wn[ch] * b);
            *v = x.clamp(0.0, 255.0) as u8;
        }
    }
    if let Some((ch, value)) = constant {
        for px in out.chunks_exact_mut(3) {
            px[ch] = value;
        }
    }
    out
}

/// Writes `n` RGB `uint8` PNGs `dir/cell_0000.png`, ... of `h` x `w` pixels
/// that look like fluorescence-microscopy cells: a dark noisy background with
/// a few blurred bright blobs (cytoplasm and nuclei). About half the images
/// are green-dominant (mean R < mean G, see [`cell_image_is_green`]), the
/// others red or magenta; their brightness varies from a peak of about 35 to
/// saturation, so that a per-image `rescale_intensity` matters; images
/// `i % 53 == 7` have an all-zero blue channel and `i % 53 == 29` a constant
/// non-zero one. The same `seed` gives the same files. Each file is written
/// through a temporary file and a rename. Returns the paths in order.
pub fn write_cell_images(
    dir: &Path,
    n: usize,
    h: usize,
    w: usize,
    seed: u64,
) -> Result<Vec<PathBuf>, IoError> {
    std::fs::create_dir_all(dir).map_err(|source| IoError::Os {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths = Vec::with_capacity(n);
    for i in 0..n {
        let path = dir.join(format!("cell_{i:04}.png"));
        let pixels = cell_image(seed, i, h, w);
        let image = ArrayData::U8(hwc(&path, h, w, 3, pixels)?);
        write_png(&path, &image)?;
        paths.push(path);
    }
    Ok(paths)
}

/// A stack of image files of one shape `(H, W, C)` and dtype, as one
/// `(N, H, W, C)` array read by regions (each image a stored chunk).
#[derive(Debug, Clone)]
pub struct ImageStack {
    pub files: Vec<PathBuf>,
    pub image: Vec<u64>,
    pub dtype: DType,
}

impl crate::store::ChunkSource for ImageStack {
    fn spec(&self) -> crate::store::StoreSpec {
        let mut shape = vec![self.files.len() as u64];
        shape.extend(&self.image);
        let mut chunks = vec![1];
        chunks.extend(&self.image);
        crate::store::StoreSpec {
            dtype: self.dtype,
            shape,
            chunks,
        }
    }

    /// Decodes the images the region spans, and cuts the region from them
    /// when it does not take them whole.
    fn read(&self, region: &blockflow_core::Region, _chunk: &[u64]) -> Result<ArrayData, IoError> {
        use blockflow_core::{with_array, ArrayKind};
        let mut origin = vec![region.origin[0]];
        origin.extend(vec![0; self.image.len()]);
        let mut shape = vec![region.shape[0]];
        shape.extend(&self.image);
        let whole = blockflow_core::Region::new(origin, shape);
        let data = read_stack(&self.files, &self.image, self.dtype, &whole)?;
        if whole.shape == region.shape {
            return Ok(data);
        }
        let cut: Vec<ndarray::SliceInfoElem> = region
            .origin
            .iter()
            .zip(&region.shape)
            .enumerate()
            .map(|(ax, (&o, &n))| {
                let start = if ax == 0 { 0 } else { o as isize };
                ndarray::SliceInfoElem::Slice {
                    start,
                    end: Some(start + n as isize),
                    step: 1,
                }
            })
            .collect();
        let info =
            ndarray::SliceInfo::<_, IxDyn, IxDyn>::try_from(cut).map_err(|e| IoError::Store {
                path: self.files.first().cloned().unwrap_or_default(),
                why: format!("region {region}: {e}"),
            })?;
        Ok(with_array!(data, a => ArrayKind::wrap(a.slice(info).to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn file_name_patterns_match_as_pythons_fnmatch() {
        // (pattern, name, fnmatch.fnmatchcase(name, pattern)) from Python 3.11.
        let cases = [
            ("a[1.png", "a[1.png", true),
            ("a**b.png", "axyzb.png", true),
            ("[]]x", "x", false),
            ("[]]x", "]x", true),
            ("[!]]x", "ax", true),
            ("[!]]x", "]x", false),
            ("a[b", "a[b", true),
            ("[ab]c[", "ac[", true),
            ("[ab]c[", "bc[", true),
            ("*[", "x[", true),
            ("[z-a]", "m", false),
            ("[]", "[]", true),
            ("*.PNG", "a.png", false),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(glob_matches(pattern, name), want, "{pattern:?} on {name:?}");
        }
    }
}
