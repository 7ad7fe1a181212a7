use ndarray::ArrayD;

use crate::{DType, Element};

/// Array data of any supported dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayData {
    Bool(ArrayD<bool>),
    U8(ArrayD<u8>),
    U16(ArrayD<u16>),
    U32(ArrayD<u32>),
    I16(ArrayD<i16>),
    I32(ArrayD<i32>),
    I64(ArrayD<i64>),
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
}

/// Runs `$body` with `$a` bound to the typed array inside an [`ArrayData`]
/// (by reference, `ref`, or by value).
#[macro_export]
macro_rules! with_array {
    ($data:expr, $a:ident => $body:expr) => {
        match $data {
            $crate::ArrayData::Bool($a) => $body,
            $crate::ArrayData::U8($a) => $body,
            $crate::ArrayData::U16($a) => $body,
            $crate::ArrayData::U32($a) => $body,
            $crate::ArrayData::I16($a) => $body,
            $crate::ArrayData::I32($a) => $body,
            $crate::ArrayData::I64($a) => $body,
            $crate::ArrayData::F32($a) => $body,
            $crate::ArrayData::F64($a) => $body,
        }
    };
}

/// Runs `$body` with the Rust element type `$t` that matches a [`DType`].
#[macro_export]
macro_rules! with_dtype {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            $crate::DType::Bool => {
                type $t = bool;
                $body
            }
            $crate::DType::U8 => {
                type $t = u8;
                $body
            }
            $crate::DType::U16 => {
                type $t = u16;
                $body
            }
            $crate::DType::U32 => {
                type $t = u32;
                $body
            }
            $crate::DType::I16 => {
                type $t = i16;
                $body
            }
            $crate::DType::I32 => {
                type $t = i32;
                $body
            }
            $crate::DType::I64 => {
                type $t = i64;
                $body
            }
            $crate::DType::F32 => {
                type $t = f32;
                $body
            }
            $crate::DType::F64 => {
                type $t = f64;
                $body
            }
        }
    };
}

/// Conversion between a typed `ArrayD<T>` and [`ArrayData`].
pub trait ArrayKind: Element {
    fn wrap(a: ArrayD<Self>) -> ArrayData;
    fn unwrap_ref(d: &ArrayData) -> Option<&ArrayD<Self>>;
}

macro_rules! kind {
    ($t:ty, $v:ident) => {
        impl ArrayKind for $t {
            fn wrap(a: ArrayD<Self>) -> ArrayData {
                ArrayData::$v(a)
            }
            fn unwrap_ref(d: &ArrayData) -> Option<&ArrayD<Self>> {
                match d {
                    ArrayData::$v(a) => Some(a),
                    _ => None,
                }
            }
        }
    };
}
kind!(bool, Bool);
kind!(u8, U8);
kind!(u16, U16);
kind!(u32, U32);
kind!(i16, I16);
kind!(i32, I32);
kind!(i64, I64);
kind!(f32, F32);
kind!(f64, F64);

impl ArrayData {
    pub fn dtype(&self) -> DType {
        match self {
            ArrayData::Bool(_) => DType::Bool,
            ArrayData::U8(_) => DType::U8,
            ArrayData::U16(_) => DType::U16,
            ArrayData::U32(_) => DType::U32,
            ArrayData::I16(_) => DType::I16,
            ArrayData::I32(_) => DType::I32,
            ArrayData::I64(_) => DType::I64,
            ArrayData::F32(_) => DType::F32,
            ArrayData::F64(_) => DType::F64,
        }
    }

    pub fn shape(&self) -> &[usize] {
        with_array!(self, a => a.shape())
    }

    pub fn len(&self) -> usize {
        with_array!(self, a => a.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn nbytes(&self) -> u64 {
        (self.len() * self.dtype().size()) as u64
    }

    /// An array of zeros.
    pub fn zeros(dtype: DType, shape: &[usize]) -> ArrayData {
        with_dtype!(dtype, T => T::wrap(ArrayD::<T>::default(shape.to_vec())))
    }

    /// Converts to another dtype with numpy's `astype` rules (float to int
    /// truncates and saturates, int to int wraps).
    pub fn cast(&self, dtype: DType) -> ArrayData {
        if self.dtype() == dtype {
            return self.clone();
        }
        with_dtype!(dtype, T => {
            with_array!(self, a => {
                if self.dtype().is_float() || dtype.is_float() || dtype == DType::Bool {
                    T::wrap(a.mapv(|v| T::from_f64(v.to_f64())))
                } else {
                    T::wrap(a.mapv(|v| T::from_i64(v.to_i64())))
                }
            })
        })
    }

    /// The part `start[ax]..start[ax] + len[ax]` along every axis (a copy).
    pub fn crop(&self, start: &[usize], len: &[usize]) -> ArrayData {
        with_array!(self, a => {
            let info: Vec<ndarray::SliceInfoElem> = start
                .iter()
                .zip(len)
                .map(|(&s, &n)| ndarray::SliceInfoElem::Slice {
                    start: s as isize,
                    end: Some((s + n) as isize),
                    step: 1,
                })
                .collect();
            let view = a.slice(info.as_slice());
            ArrayKind::wrap(view.to_owned())
        })
    }

    /// `parts` one after another along axis 0 (all of one dtype, and of
    /// one shape along the other axes); None if they are not.
    pub fn concat0(parts: &[ArrayData]) -> Option<ArrayData> {
        let first = parts.first()?;
        with_array!(first, a => {
            let mut views = vec![a.view()];
            for p in &parts[1..] {
                views.push(ArrayKind::unwrap_ref(p)?.view());
            }
            ndarray::concatenate(ndarray::Axis(0), &views).ok().map(ArrayKind::wrap)
        })
    }

    /// Values as float64 (a copy).
    pub fn to_f64(&self) -> ArrayD<f64> {
        with_array!(self, a => a.mapv(|v| v.to_f64()))
    }

    /// Typed access.
    pub fn as_typed<T: ArrayKind>(&self) -> Option<&ArrayD<T>> {
        T::unwrap_ref(self)
    }
}
