//! JSON functions in every session, over text and over raw bytes.
//!
//! The functions and operators are datafusion-functions-json's
//! (`json_get_str(_value, 'customer')`, `_value ->> 'customer'`, …). They
//! read JSON from text; a raw topic's `_value` (and `_key`) is BINARY, in
//! Kafka and in the lake alike. So each function is registered wrapped in
//! [`BytesAsText`], which takes bytes where the function takes text, and the
//! operators read a bytes operand as text (see [`BytesOperands`]).
//!
//! The invariant: bytes are read as UTF-8 text, and bytes that are not
//! UTF-8 read as NULL, as text that is not JSON does. Nothing about a value
//! fails a query.
//!
//! The wrapper only gets a call through planning: the analyzer then replaces
//! it with the crate's own function over `TRY_CAST(bytes AS VARCHAR)`
//! ([`Unwrap`]), so the crate's own rewrites (`json_get(..)::int` read as
//! `json_get_int`, nested calls flattened) apply to bytes as to text.

use std::sync::Arc;

use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::sqlparser::ast::BinaryOperator;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExprSchemable, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, TryCast,
};
use datafusion_functions_json::udfs;

/// Registers the JSON functions and operators on `registry` (a session's
/// state), bytes accepted wherever they take JSON text.
pub fn register(registry: &mut dyn FunctionRegistry) -> Result<()> {
    // Both go first, so they see a call or an operator before the crate's
    // own rewriter and planner do.
    registry.register_function_rewrite(Arc::new(Unwrap))?;
    registry.register_expr_planner(Arc::new(BytesOperands))?;
    datafusion_functions_json::register_all(registry)?;
    // The functions whose first argument is JSON, each again under its own
    // name: the wrapper replaces the crate's registration.
    for udf in [
        udfs::json_get_udf(),
        udfs::json_get_str_udf(),
        udfs::json_get_int_udf(),
        udfs::json_get_float_udf(),
        udfs::json_get_bool_udf(),
        udfs::json_get_json_udf(),
        udfs::json_get_array_udf(),
        udfs::json_as_text_udf(),
        udfs::json_contains_udf(),
        udfs::json_length_udf(),
        udfs::json_object_keys_udf(),
    ] {
        registry.register_udf(Arc::new(ScalarUDF::new_from_impl(BytesAsText {
            inner: udf,
        })))?;
    }
    Ok(())
}

/// The text type bytes of `data_type` are read as, if it is a bytes type.
fn text_type(data_type: &DataType) -> Option<DataType> {
    match data_type {
        DataType::Binary => Some(DataType::Utf8),
        DataType::LargeBinary => Some(DataType::LargeUtf8),
        DataType::BinaryView => Some(DataType::Utf8View),
        _ => None,
    }
}

/// `expr` read as text: `TRY_CAST`, so bytes that are not UTF-8 are NULL.
fn as_text(expr: Expr, text: DataType) -> Expr {
    Expr::TryCast(TryCast::new(Box::new(expr), text))
}

/// A JSON function that also takes bytes as its first (JSON) argument.
#[derive(Debug, PartialEq, Eq, Hash)]
struct BytesAsText {
    inner: Arc<ScalarUDF>,
}

impl BytesAsText {
    /// `fields` with the JSON argument's bytes type replaced by text.
    fn text_fields(fields: &[FieldRef]) -> Vec<FieldRef> {
        let mut fields = fields.to_vec();
        if let Some(json) = fields.first_mut()
            && let Some(text) = text_type(json.data_type())
        {
            *json = Arc::new(Field::new(json.name(), text, json.is_nullable()));
        }
        fields
    }
}

impl ScalarUDFImpl for BytesAsText {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let mut arg_types = arg_types.to_vec();
        if let Some(json) = arg_types.first_mut()
            && let Some(text) = text_type(json)
        {
            *json = text;
        }
        self.inner.return_type(&arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let arg_fields = Self::text_fields(args.arg_fields);
        self.inner.return_field_from_args(ReturnFieldArgs {
            arg_fields: &arg_fields,
            scalar_arguments: args.scalar_arguments,
        })
    }

    /// Reached only if the analyzer did not unwrap the call: the bytes are
    /// read as text here instead, with the same rule.
    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(json) = args.args.first_mut()
            && let Some(text) = text_type(&json.data_type())
        {
            let safe = CastOptions {
                safe: true,
                ..Default::default()
            };
            *json = json.cast_to(&text, Some(&safe))?;
            args.arg_fields = Self::text_fields(&args.arg_fields);
        }
        self.inner.invoke_with_args(args)
    }
}

/// Replaces each [`BytesAsText`] call with the crate's function, its bytes
/// argument read as text.
#[derive(Debug)]
struct Unwrap;

impl FunctionRewrite for Unwrap {
    fn name(&self) -> &'static str {
        "kappa_json_bytes_as_text"
    }

    fn rewrite(
        &self,
        expr: Expr,
        schema: &DFSchema,
        _config: &ConfigOptions,
    ) -> Result<Transformed<Expr>> {
        let Expr::ScalarFunction(call) = &expr else {
            return Ok(Transformed::no(expr));
        };
        let Some(wrapper) = call.func.inner().downcast_ref::<BytesAsText>() else {
            return Ok(Transformed::no(expr));
        };
        let inner = Arc::clone(&wrapper.inner);
        let mut args = call.args.clone();
        if let Some(json) = args.first_mut()
            && let Some(text) = text_type(&json.get_type(schema)?)
        {
            *json = as_text(json.clone(), text);
        }
        Ok(Transformed::yes(Expr::ScalarFunction(
            ScalarFunction::new_udf(inner, args),
        )))
    }
}

/// Reads a bytes left operand of `->`, `->>`, `#>`, `#>>` and `?` as text,
/// then leaves the operator to the crate's planner. The operand keeps its
/// name, so the column is still called `_value ->> 'customer'`.
#[derive(Debug)]
struct BytesOperands;

impl ExprPlanner for BytesOperands {
    fn plan_binary_op(
        &self,
        mut expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let json_operator = matches!(
            expr.op,
            BinaryOperator::Arrow
                | BinaryOperator::LongArrow
                | BinaryOperator::HashArrow
                | BinaryOperator::HashLongArrow
                | BinaryOperator::Question
        );
        if json_operator && let Some(text) = text_type(&expr.left.get_type(schema)?) {
            let name = match &expr.left {
                Expr::Column(column) => column.name.clone(),
                other => other.schema_name().to_string(),
            };
            expr.left = as_text(expr.left, text).alias(name);
        }
        Ok(PlannerResult::Original(expr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, BinaryArray};
    use datafusion::common::ScalarValue;
    use datafusion::prelude::SessionContext;

    /// `{"a": "b"}`, bytes that are not UTF-8, a tombstone.
    fn values() -> BinaryArray {
        BinaryArray::from(vec![
            Some(&br#"{"a": "b"}"#[..]),
            Some(&b"\xff{}"[..]),
            None,
        ])
    }

    async fn strings(ctx: &SessionContext, sql: &str) -> Vec<Option<String>> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| {
                let column = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
                let column = column.as_string::<i32>();
                (0..column.len())
                    .map(|i| column.is_valid(i).then(|| column.value(i).to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn functions_and_operators_take_bytes() {
        let mut state = SessionContext::new().state();
        register(&mut state).unwrap();
        let ctx = SessionContext::new_with_state(state);
        let batch = arrow::record_batch::RecordBatch::try_from_iter([(
            "_value",
            Arc::new(values()) as arrow::array::ArrayRef,
        )])
        .unwrap();
        ctx.register_batch("t", batch).unwrap();
        let expected = vec![Some("b".to_string()), None, None];
        for sql in [
            "SELECT json_get_str(_value, 'a') FROM t",
            "SELECT _value ->> 'a' FROM t",
            "SELECT json_get(_value, 'a')::varchar FROM t",
        ] {
            assert_eq!(strings(&ctx, sql).await, expected, "{sql}");
        }
        // Planned as the crate's own function over `TRY_CAST`.
        let plan = ctx
            .sql("SELECT json_get_str(_value, 'a') FROM t")
            .await
            .unwrap()
            .into_optimized_plan()
            .unwrap();
        let plan = plan.display_indent().to_string();
        assert!(
            plan.contains("json_get_str(TRY_CAST(t._value AS Utf8)"),
            "{plan}"
        );
    }

    #[test]
    fn the_wrapper_alone_reads_bytes_as_text() {
        let udf = BytesAsText {
            inner: udfs::json_get_str_udf(),
        };
        let fields = vec![
            Arc::new(Field::new("_value", DataType::Binary, true)),
            Arc::new(Field::new("path", DataType::Utf8, false)),
        ];
        let out = udf
            .invoke_with_args(ScalarFunctionArgs {
                args: vec![
                    ColumnarValue::Array(Arc::new(values())),
                    ColumnarValue::Scalar(ScalarValue::from("a")),
                ],
                arg_fields: fields.clone(),
                number_rows: 3,
                return_field: Arc::new(Field::new("out", DataType::Utf8, true)),
                config_options: Arc::new(ConfigOptions::default()),
            })
            .unwrap()
            .into_array(3)
            .unwrap();
        let out = out.as_string::<i32>();
        assert_eq!(out.value(0), "b");
        assert!(out.is_null(1) && out.is_null(2));
        assert_eq!(
            udf.return_type(&[DataType::Binary, DataType::Utf8])
                .unwrap(),
            DataType::Utf8
        );
    }
}
