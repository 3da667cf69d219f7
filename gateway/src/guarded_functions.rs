//! Functions that can keep a core busy or build huge values, guarded.
//!
//! Two things escape the per-batch stop of [`crate::stop`]:
//!
//! - an operator that loops over its input inside one poll (a nested-loop
//!   join evaluating `md5(…)` in its filter for every left row against a
//!   whole probe batch) never reaches a batch boundary, so the expensive
//!   functions check the query's stop on every call;
//! - one call that builds one huge value (`repeat('x', 2000000000)`)
//!   allocates outside the memory pool, so the functions that build values
//!   much larger than their input (`repeat`, `lpad`, `rpad`, `array_repeat`,
//!   `range`, `generate_series`) refuse up front a call whose result would
//!   exceed `--memory-limit`, with `ResourceExhausted`.
//!
//! Only this list is wrapped: DataFusion's optimizer recognises some
//! functions by type (`get_field`, `named_struct`, `power`/`log`, the JSON
//! functions), and a wrapper would hide them.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{FunctionRegistry, SessionState};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};

use crate::stop::QueryStop;

/// Functions that check the query's stop on every call.
const EXPENSIVE: &[&str] = &[
    "md5",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "digest",
    "regexp_like",
    "regexp_match",
    "regexp_replace",
    "regexp_count",
    "regexp_instr",
    "regexp_substr",
    "levenshtein",
    "translate",
    "replace",
    "concat",
    "concat_ws",
    "to_hex",
    "encode",
    "decode",
];

/// What a value-building function's call will build, in bytes, from its
/// arguments: checked before the call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Builds {
    /// `repeat(text, n)`: the text's bytes times n, per row.
    Repeat,
    /// `lpad`/`rpad(text, n [, fill])`: n characters per row.
    Pad,
    /// `array_repeat(element, n)`: n elements per row.
    ArrayRepeat,
    /// `range`/`generate_series(start, stop [, step])`: one element per step.
    Series,
}

impl Builds {
    fn of(name: &str) -> Option<Self> {
        match name {
            "repeat" => Some(Self::Repeat),
            "lpad" | "rpad" => Some(Self::Pad),
            "array_repeat" => Some(Self::ArrayRepeat),
            "range" | "generate_series" => Some(Self::Series),
            _ => None,
        }
    }
}

/// The query's stop, carried in the session's configuration so that the
/// functions planned for it can see it (set just before physical planning).
#[derive(Debug, Clone, Default)]
pub struct StopOption(pub Option<Arc<QueryStop>>);

impl ConfigExtension for StopOption {
    const PREFIX: &'static str = "kappa_stop";
}

impl ExtensionOptions for StopOption {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, _value: &str) -> DfResult<()> {
        Err(DataFusionError::Configuration(format!(
            "{key} is not a setting"
        )))
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        Vec::new()
    }
}

/// Replaces the listed functions of `state` with guarded ones, each
/// refusing results larger than `max_bytes`.
pub fn guard_functions(state: &mut SessionState, max_bytes: usize) -> DfResult<()> {
    let wanted: Vec<Arc<ScalarUDF>> = state
        .scalar_functions()
        .values()
        .filter(|f| EXPENSIVE.contains(&f.name()) || Builds::of(f.name()).is_some())
        .cloned()
        .collect();
    for function in wanted {
        let guarded = Guarded {
            builds: Builds::of(function.name()),
            inner: Arc::clone(function.inner()),
            max_bytes,
        };
        state.register_udf(Arc::new(ScalarUDF::new_from_impl(guarded)))?;
    }
    Ok(())
}

/// A function that checks the query's stop, and bounds what it builds.
#[derive(Debug)]
struct Guarded {
    inner: Arc<dyn ScalarUDFImpl>,
    builds: Option<Builds>,
    max_bytes: usize,
}

impl PartialEq for Guarded {
    fn eq(&self, other: &Self) -> bool {
        self.inner.dyn_eq(other.inner.as_ref() as &dyn Any) && self.max_bytes == other.max_bytes
    }
}

impl Eq for Guarded {}

impl std::hash::Hash for Guarded {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.dyn_hash(state);
        self.max_bytes.hash(state);
    }
}

impl ScalarUDFImpl for Guarded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> DfResult<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        if let Some(stop) = args.config_options.extensions.get::<StopOption>()
            && let Some(stop) = &stop.0
            && let Some(stopped) = stop.error()
        {
            return Err(stopped);
        }
        if let Some(builds) = self.builds {
            let bytes = result_bytes(builds, &args.args, args.number_rows)?;
            if bytes > self.max_bytes as u128 {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "{}() would build {} bytes, more than --memory-limit ({} bytes) allows",
                    self.name(),
                    bytes,
                    self.max_bytes
                )));
            }
        }
        self.inner.invoke_with_args(args)
    }
}

/// An upper estimate of what one call builds, in bytes.
fn result_bytes(builds: Builds, args: &[ColumnarValue], rows: usize) -> DfResult<u128> {
    let ints = |i: usize| -> DfResult<Vec<i128>> { int_values(args.get(i), rows) };
    let counts = ints(1)?;
    Ok(match builds {
        Builds::Repeat => {
            let lengths = byte_lengths(args.first(), rows)?;
            pairwise(&lengths, &counts)
        }
        Builds::Pad => counts.iter().map(|&n| n.max(0) as u128 * 4).sum(),
        Builds::ArrayRepeat => counts.iter().map(|&n| n.max(0) as u128 * 16).sum(),
        Builds::Series => {
            let (starts, steps) = (ints(0)?, args.get(2).map(|_| ints(2)).transpose()?);
            let mut total = 0u128;
            for (row, (&start, &stop)) in starts.iter().zip(counts.iter()).enumerate() {
                let step = steps.as_ref().map_or(1, |s| s[row % s.len()]).abs().max(1);
                total += (start.abs_diff(stop) / step as u128 + 1) * 8;
            }
            total
        }
    })
}

fn pairwise(a: &[i128], b: &[i128]) -> u128 {
    let rows = a.len().max(b.len());
    (0..rows)
        .map(|i| a[i % a.len().max(1)].max(0) as u128 * b[i % b.len().max(1)].max(0) as u128)
        .sum()
}

/// The argument's values as integers (one per row, or one for a constant);
/// nulls and non-numbers count as 0.
fn int_values(arg: Option<&ColumnarValue>, rows: usize) -> DfResult<Vec<i128>> {
    let Some(arg) = arg else {
        return Ok(vec![0]);
    };
    let array = as_array(arg, rows)?;
    let Ok(ints) = cast(&array, &DataType::Int64) else {
        return Ok(vec![0]);
    };
    Ok(ints
        .as_primitive::<Int64Type>()
        .iter()
        .map(|v| v.unwrap_or(0) as i128)
        .collect())
}

/// Each row's byte length of a text argument (one value for a constant).
fn byte_lengths(arg: Option<&ColumnarValue>, rows: usize) -> DfResult<Vec<i128>> {
    let Some(arg) = arg else {
        return Ok(vec![0]);
    };
    let array = as_array(arg, rows)?;
    let array = match array.data_type() {
        DataType::Utf8View => cast(&array, &DataType::LargeUtf8)?,
        DataType::BinaryView => cast(&array, &DataType::LargeBinary)?,
        _ => array,
    };
    let Ok(lengths) = length(&array) else {
        return Ok(vec![0]);
    };
    let lengths = cast(&lengths, &DataType::Int64)?;
    let lengths = lengths.as_primitive::<Int64Type>();
    Ok(lengths.iter().map(|v| v.unwrap_or(0) as i128).collect())
}

/// A constant as one value, an array as it is.
fn as_array(arg: &ColumnarValue, rows: usize) -> DfResult<ArrayRef> {
    match arg {
        ColumnarValue::Scalar(value) => value.to_array_of_size(1),
        ColumnarValue::Array(array) => {
            debug_assert_eq!(array.len(), rows);
            Ok(Arc::clone(array))
        }
    }
}
