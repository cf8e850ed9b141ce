//! Printing results: aligned columns with a NODE column, or JSON, or YAML. Every command
//! turns its results into JSON objects (keys in column order); one renderer prints them all.
//! In tables, a key ending in `_bytes` is shown in binary units under its name without the
//! suffix. Times are RFC 3339, UTC, to the second, in every format.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value};
use tabwriter::TabWriter;

use crate::cli::OutputFormat;

/// One row: keys in column order.
pub type Row = Map<String, Value>;

/// Prints rows in `format`.
pub fn print_rows(format: OutputFormat, rows: &[Row]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(rows)?)?,
        OutputFormat::Yaml => write!(out, "{}", serde_yaml::to_string(rows)?)?,
        OutputFormat::Table => {
            let Some(first) = rows.first() else {
                return Ok(());
            };
            let mut table = TabWriter::new(&mut out).padding(3);
            let headers: Vec<String> =
                first.keys().map(|k| k.trim_end_matches("_bytes").to_uppercase()).collect();
            writeln!(table, "{}", headers.join("\t"))?;
            for row in rows {
                let cells: Vec<String> = row.iter().map(|(k, v)| cell(k, v)).collect();
                writeln!(table, "{}", cells.join("\t"))?;
            }
            table.flush()?;
        }
    }
    Ok(())
}

/// Prints one record of a stream: a line (prefixed with the node when there are several),
/// or a JSON object per line.
pub fn print_stream_record(
    format: OutputFormat,
    node: &str,
    prefix_node: bool,
    line: &str,
    record: Row,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Table if prefix_node => writeln!(out, "{node}: {line}")?,
        OutputFormat::Table => writeln!(out, "{line}")?,
        OutputFormat::Json | OutputFormat::Yaml => {
            let mut object = Map::new();
            object.insert("node".into(), node.into());
            object.extend(record);
            writeln!(out, "{}", serde_json::to_string(&object)?)?;
        }
    }
    out.flush()?;
    Ok(())
}

fn cell(key: &str, value: &Value) -> String {
    match value {
        Value::Number(n) if key.ends_with("_bytes") => {
            n.as_u64().map_or_else(|| n.to_string(), human_bytes)
        }
        Value::String(s) => s.replace('\t', " "),
        Value::Array(items) => items.iter().map(|v| cell("", v)).collect::<Vec<_>>().join(","),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A time as RFC 3339 UTC, to the second: `2026-12-06T06:30:00Z`.
pub fn timestamp(unix_millis: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(unix_millis)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(20 * 1024 * 1024 * 1024), "20.0 GiB");
    }

    #[test]
    fn times_are_rfc3339_utc_to_the_second() {
        assert_eq!(timestamp(1_700_000_000_999), "2023-11-14T22:13:20Z");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn cells() {
        assert_eq!(cell("size_bytes", &Value::from(2048u64)), "2.0 KiB");
        assert_eq!(cell("x", &serde_json::json!(["a", "b"])), "a,b");
    }
}
