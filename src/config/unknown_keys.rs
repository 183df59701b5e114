//! Keys that no setting reads, found after the typed extraction succeeded and named with
//! their table and source, so that a typo is refused loudly instead of silently ignored.

use figment::Figment;

use super::{Config, ConfigSource};

/// Every key in the merged sources that no setting reads, named with its table and where it
/// was set (the file, or the environment variable). A typo must never silently drop a
/// limit: `url_per_second` for `urls_per_second` would leave a client unlimited.
pub(super) fn unknown_keys(figment: &Figment, source: &ConfigSource) -> Vec<String> {
    use figment::value::{Dict, Value};
    let Ok(dict) = figment.extract::<Dict>() else {
        return Vec::new();
    };
    let value = Value::from(dict);
    let mut found: Vec<Vec<String>> = Vec::new();
    // The typed extraction above already succeeded, so this pass only collects the keys
    // serde ignores; its result is not used.
    let _ = serde_ignored::deserialize::<_, _, Config>(&value, |path| {
        found.push(path_segments(&path));
    });
    found
        .into_iter()
        .map(|segments| describe_unknown(figment, source, &value, &segments))
        .collect()
}

fn path_segments(path: &serde_ignored::Path<'_>) -> Vec<String> {
    use serde_ignored::Path;
    match path {
        Path::Root => Vec::new(),
        Path::Seq { parent, index } => {
            let mut v = path_segments(parent);
            v.push(index.to_string());
            v
        }
        Path::Map { parent, key } => {
            let mut v = path_segments(parent);
            v.push(key.clone());
            v
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => path_segments(parent),
    }
}

fn describe_unknown(
    figment: &Figment,
    source: &ConfigSource,
    value: &figment::value::Value,
    segments: &[String],
) -> String {
    let Some((key, tables)) = segments.split_last() else {
        return "unknown key".into();
    };
    let mut table = String::new();
    let mut node = Some(value);
    for (i, seg) in tables.iter().enumerate() {
        node = node.and_then(|v| match seg.parse::<usize>() {
            Ok(n) => v.as_array().and_then(|a| a.get(n)),
            Err(_) => v.as_dict().and_then(|d| d.get(seg)),
        });
        match seg.parse::<usize>() {
            Ok(n) => {
                let name = node
                    .and_then(|v| v.as_dict())
                    .and_then(|d| d.get("name"))
                    .and_then(|v| v.as_str());
                table = format!("[[{table}]] entry {}", n + 1);
                if let Some(name) = name {
                    table.push_str(&format!(" (name {name:?})"));
                }
            }
            Err(_) if i == 0 => table = seg.clone(),
            Err(_) => table = format!("{table}.{seg}"),
        }
    }
    let table = if table.is_empty() {
        "at the top level".to_owned()
    } else if table.starts_with("[[") {
        format!("in {table}")
    } else {
        format!("in [{table}]")
    };
    // Named lists ([[clients]] entry 2) read better than dotted paths.
    let dotted: Vec<&str> = segments
        .iter()
        .filter(|s| s.parse::<usize>().is_err())
        .map(String::as_str)
        .collect();
    let from_env = figment
        .find_metadata(&dotted.join("."))
        .is_some_and(|m| m.name.contains("environment"));
    let origin = if from_env {
        format!(
            "from the environment variable CDNSIGN_{}",
            dotted.join("__").to_ascii_uppercase()
        )
    } else {
        format!("in {}", source.describe())
    };
    format!("unknown key {key:?} {table} {origin}")
}
