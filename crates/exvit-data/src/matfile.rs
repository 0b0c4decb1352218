//! A minimal reader for MATLAB v5 `.mat` files: enough to read the ImageNet devkit's
//! `meta.mat` (`synsets`, a struct array whose fields include `ILSVRC2012_ID` and `WNID`).
//!
//! Supports little-endian files, compressed (`miCOMPRESSED`) and plain elements, small-element
//! tags, struct arrays, char arrays (UTF-8/16 or 8-bit) and real numeric arrays of any
//! standard type (read as f64).

use std::io::Read;

/// A value of a MAT file.
#[derive(Debug, Clone, PartialEq)]
pub enum MatValue {
    /// A numeric array (real part), column-major, with its dimensions.
    Numeric {
        /// Dimensions.
        dims: Vec<usize>,
        /// Values, as f64.
        data: Vec<f64>,
    },
    /// A char array, as a string (rows concatenated column-major for 1xN).
    Char(String),
    /// A struct array: field names, and for each element its fields in that order.
    Struct {
        /// Dimensions.
        dims: Vec<usize>,
        /// Field names.
        fields: Vec<String>,
        /// Elements (column-major), each a value per field.
        elements: Vec<Vec<MatValue>>,
    },
    /// A class this reader does not decode (cell arrays, sparse, ...), by MATLAB class number.
    Other(u8),
}

impl MatValue {
    /// The field `name` of struct element `i`.
    pub fn field(&self, i: usize, name: &str) -> Option<&MatValue> {
        match self {
            MatValue::Struct { fields, elements, .. } => {
                let k = fields.iter().position(|f| f == name)?;
                elements.get(i)?.get(k)
            }
            _ => None,
        }
    }

    /// Number of elements of a struct array (0 otherwise).
    pub fn len(&self) -> usize {
        match self {
            MatValue::Struct { elements, .. } => elements.len(),
            _ => 0,
        }
    }

    /// Whether this is an empty struct array (or not a struct array).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first number of a numeric array.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            MatValue::Numeric { data, .. } => data.first().copied(),
            _ => None,
        }
    }

    /// The string of a char array.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MatValue::Char(s) => Some(s),
            _ => None,
        }
    }
}

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;

/// Reads every top-level variable of a MAT v5 file: `(name, value)`.
pub fn read_mat(bytes: &[u8]) -> Result<Vec<(String, MatValue)>, String> {
    if bytes.len() < 128 {
        return Err("too short for a MAT v5 file (128-byte header)".into());
    }
    if &bytes[126..128] != b"IM" {
        return Err(
            "not a little-endian MAT v5 file (endian indicator is not 'IM'; v7.3/HDF5 files are not supported)".into(),
        );
    }
    let mut out = Vec::new();
    let mut pos = 128;
    while pos + 8 <= bytes.len() {
        let (ty, data, next) = element(bytes, pos)?;
        pos = next;
        let inflated;
        let (ty, data) = if ty == MI_COMPRESSED {
            let mut buf = Vec::new();
            // A few hundred bytes of zlib can inflate to gigabytes: bounded.
            flate2::read::ZlibDecoder::new(data)
                .take(MAX_INFLATED + 1)
                .read_to_end(&mut buf)
                .map_err(|e| format!("bad compressed element: {e}"))?;
            if buf.len() as u64 > MAX_INFLATED {
                return Err(format!("a compressed element inflates to over {MAX_INFLATED} bytes"));
            }
            inflated = buf;
            let (t, d, _) = element(&inflated, 0)?;
            (t, d)
        } else {
            (ty, data)
        };
        if ty == MI_MATRIX {
            out.push(matrix(data, 0)?);
        }
    }
    Ok(out)
}

/// A data element at `pos`: (type, data, position of the next element, 8-byte aligned).
fn element(b: &[u8], pos: usize) -> Result<(u32, &[u8], usize), String> {
    let word = |p: usize| -> Result<u32, String> {
        b.get(p..p + 4)
            .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
            .ok_or_else(|| "truncated element tag".to_string())
    };
    let first = word(pos)?;
    if first >> 16 != 0 {
        // Small data element: size in the upper 16 bits, data in the next 4 bytes.
        let (ty, n) = (first & 0xFFFF, (first >> 16) as usize);
        let data = b.get(pos + 4..pos + 4 + n).ok_or("truncated small element")?;
        return Ok((ty, data, pos + 8));
    }
    let n = word(pos + 4)? as usize;
    let data = b.get(pos + 8..pos + 8 + n).ok_or("truncated element")?;
    let next = if first == MI_COMPRESSED { pos + 8 + n } else { pos + 8 + n.div_ceil(8) * 8 };
    Ok((first, data, next))
}

fn numbers(ty: u32, d: &[u8]) -> Result<Vec<f64>, String> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            d.chunks_exact($n).map(|c| <$t>::from_le_bytes(c.try_into().unwrap()) as f64).collect()
        };
    }
    Ok(match ty {
        MI_INT8 => d.iter().map(|&v| v as i8 as f64).collect(),
        MI_UINT8 => d.iter().map(|&v| v as f64).collect(),
        MI_INT16 => conv!(i16, 2),
        MI_UINT16 => conv!(u16, 2),
        MI_INT32 => conv!(i32, 4),
        MI_UINT32 => conv!(u32, 4),
        MI_SINGLE => conv!(f32, 4),
        MI_DOUBLE => conv!(f64, 8),
        MI_INT64 => conv!(i64, 8),
        MI_UINT64 => conv!(u64, 8),
        t => return Err(format!("unsupported numeric data type {t}")),
    })
}

/// The most bytes one compressed element may inflate to (the ImageNet devkit's `meta.mat`
/// inflates to well under 1 MiB).
const MAX_INFLATED: u64 = 256 << 20;

/// How deep structs may nest (`meta.mat`'s `synsets` is one level; each level recurses).
const MAX_DEPTH: usize = 16;

/// Parses a miMATRIX element's data into (name, value); `depth`: how many structs enclose it.
fn matrix(d: &[u8], depth: usize) -> Result<(String, MatValue), String> {
    if depth > MAX_DEPTH {
        return Err(format!("structs nested deeper than {MAX_DEPTH}"));
    }
    if d.is_empty() {
        return Ok((String::new(), MatValue::Other(0)));
    }
    let (_, flags, p) = element(d, 0)?;
    let class = *flags.first().ok_or("empty array flags")?;
    let (ty, dims_raw, p) = element(d, p)?;
    let dims: Vec<usize> = numbers(ty, dims_raw)?.into_iter().map(|v| v as usize).collect();
    let (_, name_raw, mut p) = element(d, p)?;
    let name = String::from_utf8_lossy(name_raw).into_owned();
    let count = dims.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
    let value = match class {
        2 => {
            let (ty, len_raw, p2) = element(d, p)?;
            let field_len = numbers(ty, len_raw)?.first().copied().unwrap_or(0.0) as usize;
            let (_, names_raw, p3) = element(d, p2)?;
            p = p3;
            let fields: Vec<String> = names_raw
                .chunks(field_len.max(1))
                .map(|c| String::from_utf8_lossy(c).trim_end_matches('\0').to_string())
                .collect();
            // Each element of each field takes at least an 8-byte tag: a count the data cannot
            // hold is a corrupt header, not a reason to allocate for it.
            let count = count
                .filter(|&c| c.saturating_mul(fields.len()) <= d.len() / 8 && (c <= d.len() || !fields.is_empty()))
                .ok_or_else(|| format!("struct dims {dims:?} declare more elements than {} bytes hold", d.len()))?;
            let mut elements = Vec::with_capacity(count);
            for _ in 0..count {
                let mut vals = Vec::with_capacity(fields.len());
                for _ in 0..fields.len() {
                    let (ty, sub, next) = element(d, p)?;
                    p = next;
                    if ty != MI_MATRIX {
                        return Err(format!("struct field is element type {ty}, expected a matrix"));
                    }
                    vals.push(matrix(sub, depth + 1)?.1);
                }
                elements.push(vals);
            }
            MatValue::Struct { dims, fields, elements }
        }
        4 => {
            let (ty, raw, _) = element(d, p)?;
            let s = match ty {
                MI_UTF8 | MI_UINT8 | MI_INT8 => String::from_utf8_lossy(raw).into_owned(),
                MI_UTF16 | MI_UINT16 => {
                    let u: Vec<u16> = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                    String::from_utf16_lossy(&u)
                }
                t => return Err(format!("unsupported char data type {t}")),
            };
            MatValue::Char(s)
        }
        6..=15 => {
            let (ty, raw, _) = element(d, p)?;
            MatValue::Numeric { dims, data: numbers(ty, raw)? }
        }
        c => MatValue::Other(c),
    };
    Ok((name, value))
}
