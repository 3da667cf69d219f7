//! Placeholders: `?` numbered into `$n`, the parameter schema, and the
//! values of each run of a statement.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, UnionArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::ParamError;

/// Longest parameter value quoted back in an error.
const MAX_QUOTED_VALUE: usize = 60;

/// `sql` with each `?` placeholder replaced by `$1`, `$2`, … in the order
/// they appear (and `?N` by `$N`), so DataFusion can bind them by position.
/// String literals, quoted identifiers and comments are left alone: the
/// SQL tokenizer finds the placeholders. SQL that does not tokenize is
/// returned as it is, for the parser to report.
pub fn number_placeholders(sql: &str) -> Result<Cow<'_, str>, ParamError> {
    if !sql.contains('?') {
        return Ok(Cow::Borrowed(sql));
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return Ok(Cow::Borrowed(sql));
    };
    let mut questions = Vec::new();
    let mut dollars = false;
    for token in &tokens {
        if let Token::Placeholder(p) = &token.token {
            match p.strip_prefix('?') {
                Some(n) => questions.push((token.span.start, n.to_string())),
                None => dollars = true,
            }
        }
    }
    if questions.is_empty() {
        return Ok(Cow::Borrowed(sql));
    }
    if dollars {
        return Err(ParamError::MixedStyles);
    }
    // Token locations are 1-based (line, character column); map them to
    // byte offsets in one pass over the text.
    let mut out = String::with_capacity(sql.len() + questions.len() * 2);
    let mut next = questions.iter().peekable();
    let mut counter = 0;
    let (mut line, mut column) = (1u64, 1u64);
    let mut chars = sql.chars();
    while let Some(c) = chars.next() {
        if let Some((at, n)) = next.peek()
            && at.line == line
            && at.column == column
        {
            // `?` and `?N`: the `?` here, the digits after it.
            let position = if n.is_empty() {
                counter += 1;
                counter
            } else {
                n.parse::<usize>().unwrap_or(0)
            };
            let _ = write!(out, "${position}");
            for _ in 0..n.chars().count() {
                chars.next();
            }
            column += 1 + n.chars().count() as u64;
            next.next();
            continue;
        }
        out.push(c);
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    Ok(Cow::Owned(out))
}

/// The placeholders of a planned statement, by position (`$1` first), with
/// the types DataFusion inferred for them where it could.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Placeholders {
    types: Vec<Option<DataType>>,
}

impl Placeholders {
    /// From `LogicalPlan::get_parameter_types`. A position no placeholder
    /// uses (`$1` and `$3` but no `$2`) is still a parameter, of unknown type.
    pub fn new(found: HashMap<String, Option<DataType>>) -> Result<Self, ParamError> {
        let mut types = Vec::new();
        for (id, data_type) in found {
            let position = id
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n > 0)
                .ok_or(ParamError::Named(id))?;
            if types.len() < position {
                types.resize(position, None);
            }
            types[position - 1] = data_type;
        }
        Ok(Self { types })
    }

    /// How many parameters the statement takes.
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Whether the statement takes no parameters.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// The parameter schema a client sees: fields `$1`, `$2`, …, typed `Null`
    /// where the type could not be inferred (any value is accepted there).
    pub fn schema(&self) -> Schema {
        Schema::new(
            self.types
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    Field::new(
                        format!("${}", i + 1),
                        t.clone().unwrap_or(DataType::Null),
                        true,
                    )
                })
                .collect::<Vec<_>>(),
        )
    }

    /// The values for each run of the statement: `None` when it takes no
    /// parameters and none are bound (run once as it is), otherwise one list
    /// per parameter row, each value converted to its placeholder's type.
    /// Columns are taken by position (ADBC names them `0`, `1`, …; other
    /// clients use other names); a dense or sparse union column (what
    /// flightsql-dbapi sends) gives each row's value of whatever type it has.
    pub fn bind(
        &self,
        params: Option<&RecordBatch>,
    ) -> Result<Option<Vec<Vec<ScalarValue>>>, ParamError> {
        let Some(params) = params else {
            return if self.types.is_empty() {
                Ok(None)
            } else {
                Err(ParamError::Unbound(self.types.len()))
            };
        };
        if params.num_columns() != self.types.len() {
            return Err(ParamError::Count {
                expected: self.types.len(),
                got: params.num_columns(),
            });
        }
        let rows = (0..params.num_rows())
            .map(|row| {
                params
                    .columns()
                    .iter()
                    .zip(&self.types)
                    .enumerate()
                    .map(|(i, (column, data_type))| value(i + 1, column, row, data_type.as_ref()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(rows))
    }
}

/// Parameter `position`'s value in `row`, as `data_type` if that is known.
fn value(
    position: usize,
    column: &ArrayRef,
    row: usize,
    data_type: Option<&DataType>,
) -> Result<ScalarValue, ParamError> {
    let scalar = scalar_at(column, row).map_err(|e| ParamError::Value {
        position,
        reason: e.to_string(),
    })?;
    match data_type {
        Some(expected) if expected != &scalar.data_type() && expected != &DataType::Null => {
            scalar.cast_to(expected).map_err(|e| ParamError::Type {
                position,
                expected: expected.clone(),
                actual: scalar.data_type(),
                value: quoted(&scalar),
                reason: e.strip_backtrace(),
            })
        }
        _ => Ok(scalar),
    }
}

/// The value at `row`, looking through unions to the member's own value.
fn scalar_at(column: &ArrayRef, row: usize) -> datafusion::error::Result<ScalarValue> {
    if let Some(union) = column.as_any().downcast_ref::<UnionArray>() {
        let child = union.child(union.type_id(row));
        return scalar_at(child, union.value_offset(row));
    }
    ScalarValue::try_from_array(column, row)
}

/// A value as an error message quotes it: short, strings in quotes.
fn quoted(scalar: &ScalarValue) -> String {
    let text = match scalar {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => {
            format!("'{s}'")
        }
        other => other.to_string(),
    };
    if text.chars().count() > MAX_QUOTED_VALUE {
        let cut: String = text.chars().take(MAX_QUOTED_VALUE).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// The schema of results that concatenate `runs` runs of a statement, the
/// first run's schema given: with several runs every column is nullable,
/// since a NULL parameter can make a column nullable in its run alone (and
/// later runs are bound only when they start).
pub fn runs_schema(first: SchemaRef, runs: usize) -> SchemaRef {
    if runs <= 1 || first.fields().iter().all(|f| f.is_nullable()) {
        return first;
    }
    let fields: Vec<Field> = first
        .fields()
        .iter()
        .map(|field| Field::clone(field).with_nullable(true))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, first.metadata().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::buffer::ScalarBuffer;
    use arrow::datatypes::{Int64Type, UnionFields};

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    #[test]
    fn question_marks_are_numbered_in_text_order() {
        let sql = "SELECT '?', \"a?\" -- ?\nFROM t WHERE a = ? AND /* ? */ b IN (?, ?)";
        assert_eq!(
            number_placeholders(sql).unwrap(),
            "SELECT '?', \"a?\" -- ?\nFROM t WHERE a = $1 AND /* ? */ b IN ($2, $3)"
        );
        assert_eq!(
            number_placeholders("SELECT ?2, ?1").unwrap(),
            "SELECT $2, $1"
        );
        assert_eq!(
            number_placeholders("SELECT 'é', ?").unwrap(),
            "SELECT 'é', $1"
        );
        assert!(matches!(
            number_placeholders("SELECT $1, ?"),
            Err(ParamError::MixedStyles)
        ));
        assert!(matches!(
            number_placeholders("SELECT $1").unwrap(),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            number_placeholders("SELECT '?'").unwrap(),
            Cow::Borrowed(_)
        ));
    }

    fn placeholders(types: &[(&str, Option<DataType>)]) -> Placeholders {
        Placeholders::new(
            types
                .iter()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn placeholders_are_positional_and_gaps_are_untyped() {
        let p = placeholders(&[("$3", Some(DataType::Int32)), ("$1", None)]);
        let schema = p.schema();
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type().clone()))
            .collect();
        assert_eq!(
            fields,
            [
                ("$1", DataType::Null),
                ("$2", DataType::Null),
                ("$3", DataType::Int32)
            ]
        );
        let named = Placeholders::new(HashMap::from([("$who".to_string(), None)]));
        assert!(named.unwrap_err().to_string().contains("$who"));
    }

    #[test]
    fn values_are_converted_to_the_placeholder_types() {
        let p = placeholders(&[("$1", Some(DataType::Int32)), ("$2", None)]);
        let params = batch(vec![
            (
                "0",
                Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            ("1", Arc::new(Float64Array::from(vec![2.5, 3.5]))),
        ]);
        let rows = p.bind(Some(&params)).unwrap().unwrap();
        assert_eq!(
            rows,
            [
                vec![ScalarValue::Int32(Some(1)), ScalarValue::Float64(Some(2.5))],
                vec![ScalarValue::Int32(None), ScalarValue::Float64(Some(3.5))],
            ]
        );
    }

    #[test]
    fn wrong_counts_and_types_are_named() {
        let p = placeholders(&[("$1", Some(DataType::Int64)), ("$2", Some(DataType::Utf8))]);
        let one = batch(vec![("0", Arc::new(Int64Array::from(vec![1])) as ArrayRef)]);
        let err = p.bind(Some(&one)).unwrap_err().to_string();
        assert!(
            err.contains("2 parameter(s) ($1, $2) but 1 were bound: $2 missing"),
            "{err}"
        );

        let bad = batch(vec![
            ("0", Arc::new(StringArray::from(vec!["abc"])) as ArrayRef),
            ("1", Arc::new(StringArray::from(vec!["x"]))),
        ]);
        let err = p.bind(Some(&bad)).unwrap_err().to_string();
        assert!(
            err.starts_with("parameter $1 must be Int64, got 'abc' (Utf8)"),
            "{err}"
        );

        let err = p.bind(None).unwrap_err().to_string();
        assert!(err.contains("missing parameter(s) $1, $2"), "{err}");
        assert_eq!(Placeholders::default().bind(None).unwrap(), None);
    }

    #[test]
    fn union_columns_give_their_members_values() {
        let fields = UnionFields::try_new(
            [0, 1],
            [
                Field::new("int", DataType::Int64, true),
                Field::new("str", DataType::Utf8, true),
            ],
        )
        .unwrap();
        let union = UnionArray::try_new(
            fields,
            ScalarBuffer::from(vec![1i8, 0]),
            Some(ScalarBuffer::from(vec![0i32, 0])),
            vec![
                Arc::new(arrow::array::PrimitiveArray::<Int64Type>::from(vec![7])),
                Arc::new(StringArray::from(vec!["c1"])),
            ],
        )
        .unwrap();
        let params = batch(vec![("0", Arc::new(union) as ArrayRef)]);
        let rows = placeholders(&[("$1", None)])
            .bind(Some(&params))
            .unwrap()
            .unwrap();
        assert_eq!(
            rows,
            [
                vec![ScalarValue::from("c1")],
                vec![ScalarValue::Int64(Some(7))]
            ]
        );
        let typed = placeholders(&[("$1", Some(DataType::Int32))]);
        let err = typed.bind(Some(&params)).unwrap_err().to_string();
        assert!(err.contains("got 'c1' (Utf8)"), "{err}");
    }

    #[test]
    fn several_runs_make_every_column_nullable() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        assert_eq!(runs_schema(Arc::clone(&schema), 1), schema);
        assert!(runs_schema(schema, 2).field(0).is_nullable());
    }
}
