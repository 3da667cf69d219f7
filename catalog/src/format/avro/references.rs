//! Avro schemas made whole before arrow-avro reads them: named types
//! referenced from other registry subjects, and every use of a named type
//! written out.
//!
//! A registry's Avro schema may name a record, enum or fixed it does not
//! define (`"type": "shop.Address"`), listing in its `references` the
//! subject and version that define it (Confluent's schema references). An
//! Avro parser, arrow-avro's included, reads one document, so each
//! referenced document is fetched (its own references too) and written in
//! where the schema uses the type, as if the author had defined it there.
//! Uses of the document's own types are written out too ([`expand`] says
//! why).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::format::registry::{RegisteredSchema, SchemaError, SchemaRegistry, SchemaType};

/// Most documents one schema may pull in through its references: a bound on
/// a registry that answers with an endless chain.
const MAX_DOCUMENTS: usize = 256;

/// Avro's primitive type names: never a reference.
const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// `schema` as one self-contained Avro document: every use of a named type
/// written out ([`expand`]), the ones it takes from other subjects included.
pub async fn self_contained(
    registry: &SchemaRegistry,
    schema: &RegisteredSchema,
) -> Result<String, SchemaError> {
    let named = referenced_types(registry, schema).await?;
    expand(&schema.schema, &named)
}

/// Every named type the references of `schema` define (transitively), by
/// full name; a type nested in a referenced document comes with it.
async fn referenced_types(
    registry: &SchemaRegistry,
    schema: &RegisteredSchema,
) -> Result<HashMap<String, Value>, SchemaError> {
    let mut named = HashMap::new();
    let mut seen = HashSet::new();
    let mut pending = schema.references.clone();
    while let Some(reference) = pending.pop() {
        if !seen.insert((reference.subject.clone(), reference.version)) {
            continue;
        }
        if seen.len() > MAX_DOCUMENTS {
            return Err(SchemaError::Invalid(format!(
                "references more than {MAX_DOCUMENTS} schemas"
            )));
        }
        let found = registry.referenced(&reference).await?;
        if found.schema_type != SchemaType::Avro {
            return Err(SchemaError::Invalid(format!(
                "reference {} (subject '{}') is a {} schema, not an Avro one",
                reference.name, reference.subject, found.schema_type
            )));
        }
        let document: Value = serde_json::from_str(&found.schema).map_err(|e| {
            SchemaError::Invalid(format!(
                "reference {} (subject '{}') is not JSON: {e}",
                reference.name, reference.subject
            ))
        })?;
        let Some(full_name) = document.as_object().and_then(|o| full_name_of(o, None)) else {
            return Err(SchemaError::Invalid(format!(
                "reference {} (subject '{}') is not a named type (record, enum or fixed)",
                reference.name, reference.subject
            )));
        };
        named.insert(full_name, document);
        pending.extend(found.references);
    }
    Ok(named)
}

/// `schema` (JSON text) with every use of a named type written out in full:
/// the types in `named` (from other subjects) and the ones the document
/// defines itself. Only a type's use inside its own definition stays a name
/// (a recursive type, which no table can hold anyway).
///
/// Why every use and not only the first: arrow-avro 59's schema resolution
/// takes a writer's type given by name as a direct match for whatever the
/// reader has in that place, so in a union such as `["double", "Country"]`
/// a `Country` value would be decoded as the `double` branch (read as 8
/// bytes, or, for `["long", "Country"]`, silently as a number). A type
/// written out in full resolves by its kind, as it should. arrow-avro lets a
/// document define a name again, and Avro's rules make every definition of
/// a name the same type.
pub fn expand(schema: &str, named: &HashMap<String, Value>) -> Result<String, SchemaError> {
    let mut document: Value = serde_json::from_str(schema)
        .map_err(|e| SchemaError::Invalid(format!("the Avro schema is not JSON: {e}")))?;
    let mut walk = Expander {
        named,
        defined: HashMap::new(),
        defining: HashSet::new(),
        written: 0,
    };
    walk.schema(&mut document, None)?;
    Ok(document.to_string())
}

/// A named type's full name, if `object` defines one.
fn full_name_of(object: &Map<String, Value>, namespace: Option<&str>) -> Option<String> {
    if !matches!(
        object.get("type").and_then(Value::as_str),
        Some("record" | "error" | "enum" | "fixed")
    ) {
        return None;
    }
    let name = object.get("name")?.as_str()?;
    let namespace = object
        .get("namespace")
        .and_then(Value::as_str)
        .or(namespace);
    Some(qualify(name, namespace))
}

/// A name as Avro reads it in `namespace`: a dotted name is already full.
fn qualify(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(namespace) if !name.contains('.') && !namespace.is_empty() => {
            format!("{namespace}.{name}")
        }
        _ => name.to_string(),
    }
}

/// The namespace of a full name (what precedes its last dot).
fn namespace_of(full_name: &str) -> Option<&str> {
    full_name.rsplit_once('.').map(|(namespace, _)| namespace)
}

/// Most named types written out in one document: a bound on the growth of a
/// schema whose types use each other many times over.
const MAX_WRITTEN: usize = 10_000;

/// Walks a schema in document order (the order in which Avro requires a
/// type to be defined before it is used by name), writing uses out.
struct Expander<'a> {
    named: &'a HashMap<String, Value>,
    /// Types the document has defined so far, written out, by full name.
    defined: HashMap<String, Value>,
    /// Types whose definition is being walked (uses inside stay names).
    defining: HashSet<String>,
    written: usize,
}

impl Expander<'_> {
    fn schema(&mut self, schema: &mut Value, namespace: Option<&str>) -> Result<(), SchemaError> {
        match schema {
            Value::String(name) if !PRIMITIVES.contains(&name.as_str()) => {
                let full = qualify(name, namespace);
                if self.defining.contains(&full) {
                    return Ok(());
                }
                if let Some(definition) = self.defined.get(&full) {
                    *schema = definition.clone();
                    return self.count();
                }
                // A referenced type with no namespace, named from inside one.
                let found = self
                    .named
                    .get(&full)
                    .or_else(|| self.named.get(name.as_str()));
                if let Some(definition) = found {
                    *schema = definition.clone();
                    self.count()?;
                    self.schema(schema, namespace)?;
                }
                Ok(())
            }
            Value::Array(branches) => branches
                .iter_mut()
                .try_for_each(|branch| self.schema(branch, namespace)),
            Value::Object(object) => self.object(object, namespace),
            _ => Ok(()),
        }
    }

    fn count(&mut self) -> Result<(), SchemaError> {
        self.written += 1;
        if self.written > MAX_WRITTEN {
            return Err(SchemaError::Invalid(format!(
                "the Avro schema uses named types more than {MAX_WRITTEN} times"
            )));
        }
        Ok(())
    }

    fn object(
        &mut self,
        object: &mut Map<String, Value>,
        namespace: Option<&str>,
    ) -> Result<(), SchemaError> {
        let kind = object
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match kind.as_deref() {
            Some("record" | "error" | "enum" | "fixed") => {
                let Some(full) = full_name_of(object, namespace) else {
                    return Ok(()); // no name: the parser says what is wrong
                };
                // Its namespace made explicit, so the definition means the
                // same wherever a use of it is written out.
                let dotted = object["name"].as_str().is_some_and(|n| n.contains('.'));
                if let Some(inner) = namespace_of(&full)
                    && !dotted
                    && !object.contains_key("namespace")
                {
                    object.insert("namespace".into(), inner.into());
                }
                self.defining.insert(full.clone());
                let inner = namespace_of(&full).map(str::to_owned);
                if let Some(Value::Array(fields)) = object.get_mut("fields") {
                    for field in fields {
                        if let Some(field_type) = field.get_mut("type") {
                            self.schema(field_type, inner.as_deref())?;
                        }
                    }
                }
                self.defining.remove(&full);
                self.defined.insert(full, Value::Object(object.clone()));
                Ok(())
            }
            Some("array") => match object.get_mut("items") {
                Some(items) => self.schema(items, namespace),
                None => Ok(()),
            },
            Some("map") => match object.get_mut("values") {
                Some(values) => self.schema(values, namespace),
                None => Ok(()),
            },
            // `{"type": "shop.Address"}`, `{"type": "long", "logicalType": …}`
            // or `{"type": [..]}`: the type itself is a schema.
            _ => match object.get_mut("type") {
                Some(inner) => self.schema(inner, namespace),
                None => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(documents: &[&str]) -> HashMap<String, Value> {
        documents
            .iter()
            .map(|d| {
                let v: Value = serde_json::from_str(d).unwrap();
                (full_name_of(v.as_object().unwrap(), None).unwrap(), v)
            })
            .collect()
    }

    const ADDRESS: &str = r#"{"type": "record", "name": "Address", "namespace": "common",
        "fields": [{"name": "city", "type": "string"}, {"name": "country", "type": "common.Country"}]}"#;
    const COUNTRY: &str =
        r#"{"type": "enum", "name": "Country", "namespace": "common", "symbols": ["FR", "DE"]}"#;

    #[test]
    fn referenced_types_are_written_out_at_every_use() {
        let schema = r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [
            {"name": "billing", "type": "common.Address"},
            {"name": "shipping", "type": ["null", "common.Address"]},
            {"name": "origin", "type": {"type": "array", "items": "common.Country"}}]}"#;
        let whole: Value =
            serde_json::from_str(&expand(schema, &named(&[ADDRESS, COUNTRY])).unwrap()).unwrap();
        let fields = whole["fields"].as_array().unwrap();
        assert_eq!(fields[0]["type"]["name"], "Address");
        assert_eq!(
            fields[0]["type"]["fields"][1]["type"]["name"], "Country",
            "a reference's own references are written in too"
        );
        assert_eq!(fields[1]["type"][1]["name"], "Address", "and at later uses");
        assert_eq!(fields[2]["type"]["items"]["symbols"][1], "DE");
        // And arrow-avro reads the whole document.
        let format = super::super::AvroFormat::plain(&whole.to_string()).unwrap();
        assert_eq!(format.value_schema().fields().len(), 3);
    }

    #[test]
    fn a_document_s_own_types_keep_their_namespace_where_written_out() {
        let schema = r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [
            {"name": "a", "type": {"type": "record", "name": "Leg", "fields": [
                {"name": "next", "type": ["null", "Leg"]},
                {"name": "kind", "type": {"type": "enum", "name": "Kind", "namespace": "geo", "symbols": ["X"]}}]}},
            {"name": "b", "type": {"type": "record", "name": "Other", "namespace": "elsewhere", "fields": [
                {"name": "leg", "type": "shop.Leg"}]}},
            {"name": "c", "type": ["null", "geo.Kind", "nowhere.Thing"]}]}"#;
        let whole: Value = serde_json::from_str(&expand(schema, &HashMap::new()).unwrap()).unwrap();
        let leg = &whole["fields"][0]["type"];
        assert_eq!(leg["namespace"], "shop", "made explicit");
        assert_eq!(
            leg["fields"][0]["type"][1], "Leg",
            "a recursive use stays a name"
        );
        let written = &whole["fields"][1]["type"]["fields"][0]["type"];
        assert_eq!(
            (&written["name"], &written["namespace"]),
            (&"Leg".into(), &"shop".into())
        );
        assert_eq!(whole["fields"][2]["type"][1]["name"], "Kind");
        assert_eq!(
            whole["fields"][2]["type"][2], "nowhere.Thing",
            "an unknown name is left for the parser to name"
        );
    }
}
