//! The helpers column masks are written with (`policies.rs`):
//! `mask_redact(x)` ('****'), `mask_partial(x, n)` (all but the last `n`
//! characters as '*') and `mask_hash(x)` (salted SHA-256 in hex, stable
//! across restarts, so masked columns still join).
//!
//! A mask runs on every row a masked column is read for, so each helper
//! writes into one buffer per batch and keeps the type it was given
//! (`Utf8View` stays `Utf8View`, as the scan produced it), without a copy
//! per row or a cast back.

use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder, StringViewBuilder};
use arrow::datatypes::DataType;
use datafusion::error::Result as DataFusionResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use sha2::{Digest, Sha256};

/// The mask helpers, registered with the engine's context; `salt` is the
/// catalog's, read by `mask_hash` on each batch.
pub(crate) fn mask_functions(salt: Arc<RwLock<String>>) -> Vec<ScalarUDF> {
    [Mask::Redact, Mask::Partial, Mask::Hash]
        .map(|kind| {
            ScalarUDF::new_from_impl(MaskFunction {
                kind,
                signature: match kind {
                    Mask::Partial => Signature::any(2, Volatility::Immutable),
                    _ => Signature::any(1, Volatility::Immutable),
                },
                salt: Arc::clone(&salt),
            })
        })
        .to_vec()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mask {
    Redact,
    /// Shows this many characters at the end.
    Partial,
    Hash,
}

#[derive(Debug)]
struct MaskFunction {
    kind: Mask,
    signature: Signature,
    salt: Arc<RwLock<String>>,
}

impl PartialEq for MaskFunction {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Eq for MaskFunction {}

impl std::hash::Hash for MaskFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
    }
}

impl ScalarUDFImpl for MaskFunction {
    fn name(&self) -> &str {
        match self.kind {
            Mask::Redact => "mask_redact",
            Mask::Partial => "mask_partial",
            Mask::Hash => "mask_hash",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DataFusionResult<DataType> {
        Ok(match args.first() {
            Some(DataType::Utf8View) => DataType::Utf8View,
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DataFusionResult<ColumnarValue> {
        let mut arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let values = arrays.remove(0);
        let shown = match (self.kind, arrays.first()) {
            (Mask::Partial, Some(n)) => {
                let n = arrow::compute::cast(n, &DataType::Int64)?;
                let n = n.as_primitive::<arrow::datatypes::Int64Type>();
                match !n.is_empty() && n.is_valid(0) {
                    true => usize::try_from(n.value(0)).unwrap_or(0),
                    false => 0,
                }
            }
            _ => 0,
        };
        let salt = self.salt.read().unwrap_or_else(|p| p.into_inner()).clone();
        let masker = Masker {
            kind: self.kind,
            shown,
            salt,
        };
        let masked: ArrayRef = match values.data_type() {
            DataType::Utf8View => {
                let mut out = StringViewBuilder::with_capacity(values.len());
                masker.mask(values.as_string_view().iter(), &mut out);
                Arc::new(out.finish())
            }
            DataType::Utf8 => masker.mask_into_utf8(values.as_string::<i32>().iter(), values.len()),
            _ => {
                let text = arrow::compute::cast(&values, &DataType::Utf8)?;
                masker.mask_into_utf8(text.as_string::<i32>().iter(), text.len())
            }
        };
        Ok(ColumnarValue::Array(masked))
    }
}

/// A string builder a masked value is appended to.
trait Append {
    fn value(&mut self, text: &str);
    fn null(&mut self);
}

impl Append for StringBuilder {
    fn value(&mut self, text: &str) {
        self.append_value(text);
    }
    fn null(&mut self) {
        self.append_null();
    }
}

impl Append for StringViewBuilder {
    fn value(&mut self, text: &str) {
        self.append_value(text);
    }
    fn null(&mut self) {
        self.append_null();
    }
}

/// One batch's masking: the helper, its argument, the salt.
struct Masker {
    kind: Mask,
    shown: usize,
    salt: String,
}

impl Masker {
    fn mask_into_utf8<'a>(
        &self,
        values: impl Iterator<Item = Option<&'a str>>,
        rows: usize,
    ) -> ArrayRef {
        let mut out = StringBuilder::with_capacity(rows, rows * 8);
        self.mask(values, &mut out);
        Arc::new(out.finish())
    }

    fn mask<'a>(&self, values: impl Iterator<Item = Option<&'a str>>, out: &mut impl Append) {
        let mut scratch = String::new();
        for value in values {
            let Some(text) = value else {
                out.null();
                continue;
            };
            match self.kind {
                Mask::Redact => out.value("****"),
                Mask::Partial => {
                    let length = text.chars().count();
                    let hidden = length.saturating_sub(self.shown);
                    if hidden == 0 {
                        out.value(text);
                        continue;
                    }
                    let tail = text
                        .char_indices()
                        .nth(hidden)
                        .map_or(text.len(), |(at, _)| at);
                    scratch.clear();
                    scratch.extend(std::iter::repeat_n('*', hidden));
                    scratch.push_str(&text[tail..]);
                    out.value(&scratch);
                }
                Mask::Hash => {
                    let digest = Sha256::new()
                        .chain_update(self.salt.as_bytes())
                        .chain_update([0])
                        .chain_update(text.as_bytes())
                        .finalize();
                    scratch.clear();
                    for byte in digest {
                        let _ = write!(scratch, "{byte:02x}");
                    }
                    out.value(&scratch);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{StringArray, StringViewArray};

    fn masked(kind: Mask, shown: usize, values: ArrayRef) -> Vec<Option<String>> {
        let masker = Masker {
            kind,
            shown,
            salt: "pepper".into(),
        };
        let out: ArrayRef = match values.data_type() {
            DataType::Utf8View => {
                let mut out = StringViewBuilder::new();
                masker.mask(values.as_string_view().iter(), &mut out);
                Arc::new(out.finish())
            }
            _ => masker.mask_into_utf8(values.as_string::<i32>().iter(), values.len()),
        };
        let text = arrow::compute::cast(&out, &DataType::Utf8).unwrap();
        text.as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect()
    }

    #[test]
    fn helpers_mask_by_characters_and_keep_nulls() {
        let views: ArrayRef = Arc::new(StringViewArray::from(vec![
            Some("25-989-741-2988"),
            None,
            Some("ab"),
            Some("héllo wörld"),
        ]));
        assert_eq!(
            masked(Mask::Partial, 4, Arc::clone(&views)),
            vec![
                Some("***********2988".into()),
                None,
                Some("ab".into()),
                Some("*******örld".into()),
            ]
        );
        assert_eq!(
            masked(Mask::Redact, 0, Arc::clone(&views))[..2],
            [Some("****".into()), None]
        );
        let plain: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), Some("x")]));
        let hashes = masked(Mask::Hash, 0, plain);
        // Stable and salted: SHA-256 of "pepper\0x".
        let expected = Sha256::digest(b"pepper\0x")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        assert_eq!(hashes, vec![Some(expected.clone()), Some(expected)]);
    }
}
