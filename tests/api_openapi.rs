//! openapi.yaml is the HTTP contract: its paths and methods must equal the router's table
//! (`ponder::api::ROUTES`), every `$ref` must resolve, every component must be used, and the
//! inference operations must document every error status the server sends.

use std::collections::BTreeSet;

use ponder::api::ROUTES;
use serde_yaml::Value;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    let paths = spec["paths"].as_mapping().unwrap();
    let mut ops = BTreeSet::new();
    for (path, item) in paths {
        for (method, _) in item.as_mapping().unwrap() {
            let m = method.as_str().unwrap();
            if METHODS.contains(&m) {
                ops.insert((m.to_uppercase(), path.as_str().unwrap().to_string()));
            }
        }
    }
    ops
}

#[test]
fn routes_equal_openapi_paths() {
    let spec = spec();
    assert_eq!(spec["openapi"].as_str().unwrap(), "3.1.0");
    let documented = operations(&spec);
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.yaml: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "openapi.yaml paths the router lacks: {unserved:?}"
    );
    assert_eq!(served.len(), ROUTES.len(), "ROUTES holds a duplicate");
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                if k.as_str() == Some("$ref") {
                    out.push(v.as_str().unwrap().to_string());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Sequence(s) => s.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn refs_resolve_and_components_are_used() {
    let spec = spec();
    let mut refs = Vec::new();
    collect_refs(&spec, &mut refs);
    assert!(refs.len() > 20, "{refs:?}");
    for r in &refs {
        let mut node = &spec;
        let rest = r
            .strip_prefix("#/")
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        for part in rest.split('/') {
            node = &node[part];
        }
        assert!(!node.is_null(), "unresolved $ref {r}");
    }
    let used: BTreeSet<&str> = refs.iter().map(String::as_str).collect();
    for kind in ["schemas", "responses", "headers"] {
        for (name, _) in spec["components"][kind].as_mapping().unwrap() {
            let r = format!("#/components/{kind}/{}", name.as_str().unwrap());
            assert!(used.contains(r.as_str()), "unused component {r}");
        }
    }
}

#[test]
fn every_operation_documents_its_statuses() {
    let spec = spec();
    for (method, path) in operations(&spec) {
        let op = &spec["paths"][path.as_str()][method.to_lowercase().as_str()];
        let statuses: BTreeSet<String> = op["responses"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        assert!(statuses.contains("200"), "{method} {path}");
        assert!(
            statuses.contains("405"),
            "{method} {path}: wrong-method answer"
        );
        if method == "POST" {
            for s in ["400", "404", "413", "429", "500", "503"] {
                assert!(statuses.contains(s), "{method} {path} lacks {s}");
            }
            assert!(!op["requestBody"].is_null(), "{method} {path}");
        }
    }
}
