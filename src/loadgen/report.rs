//! Side-by-side tables from the `FIGURE {...}` lines of one or more runs:
//! one markdown table per scenario and parameter set, a column per target
//! (ventas, ventas-noflush, peer, floor), then the ratios the issue's
//! targets are stated in.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::Figure;

/// A number for a table: integers without decimals, small values with three.
pub fn number(value: f64) -> String {
    if value.abs() >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// Every `FIGURE {...}` line of `text`.
pub fn parse(text: &str) -> Vec<Figure> {
    text.lines()
        .filter_map(|line| line.strip_prefix("FIGURE "))
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect()
}

fn params_label(figure: &Figure) -> String {
    figure
        .params
        .iter()
        .map(|(name, value)| format!("{name}={}", number(*value)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn find<'a>(
    figures: &'a [Figure],
    scenario: &str,
    target: &str,
    param: Option<(&str, f64)>,
) -> Option<&'a Figure> {
    figures.iter().rev().find(|figure| {
        figure.scenario == scenario
            && figure.target == target
            && param.is_none_or(|(name, value)| figure.params.get(name) == Some(&value))
    })
}

fn value(figure: Option<&Figure>, name: &str) -> Option<f64> {
    figure.and_then(|figure| figure.values.get(name).copied())
}

fn ratio_row(out: &mut String, what: &str, top: Option<f64>, bottom: Option<f64>) {
    if let (Some(top), Some(bottom)) = (top, bottom) {
        if bottom != 0.0 {
            let _ = writeln!(out, "| {what} | {} |", number(top / bottom));
        }
    }
}

/// Markdown tables for `figures`.
pub fn render(figures: &[Figure]) -> String {
    let mut out = String::new();
    // Group by (scenario, parameters), keeping first-seen order.
    let mut groups: Vec<(String, String, Vec<&Figure>)> = Vec::new();
    for figure in figures {
        let label = params_label(figure);
        match groups
            .iter_mut()
            .find(|(scenario, params, _)| *scenario == figure.scenario && *params == label)
        {
            Some((_, _, members)) => members.push(figure),
            None => groups.push((figure.scenario.clone(), label, vec![figure])),
        }
    }
    for (scenario, params, members) in &groups {
        let _ = writeln!(out, "\n### {scenario} ({params})\n");
        let targets: Vec<&str> = members.iter().map(|f| f.target.as_str()).collect();
        let _ = writeln!(out, "| value | {} |", targets.join(" | "));
        let _ = writeln!(out, "| --- |{}", " --- |".repeat(targets.len()));
        let mut names: BTreeMap<&str, ()> = BTreeMap::new();
        for member in members {
            for name in member.values.keys() {
                names.insert(name, ());
            }
        }
        for name in names.keys() {
            let cells: Vec<String> = members
                .iter()
                .map(|member| member.values.get(*name).map_or("".into(), |v| number(*v)))
                .collect();
            let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
        }
    }
    out.push_str(&ratios(figures));
    out
}

/// The ratios the targets are stated in, where both sides ran.
pub fn ratios(figures: &[Figure]) -> String {
    let mut out = String::from("\n### Ratios\n\n| ratio | value |\n| --- | --- |\n");
    let floor_ingest = value(
        find(figures, "floor_ingest", "floor", None),
        "record_and_sync_sales_per_s",
    );
    let mut device_counts: Vec<f64> = figures
        .iter()
        .filter(|figure| figure.scenario == "ingest")
        .filter_map(|figure| figure.params.get("devices").copied())
        .collect();
    device_counts.sort_by(f64::total_cmp);
    device_counts.dedup();
    for devices in device_counts {
        let at = Some(("devices", devices));
        let get = |target| {
            value(
                find(figures, "ingest", target, at),
                "sales_acknowledged_per_s",
            )
        };
        let n = number(devices);
        ratio_row(
            &mut out,
            &format!("ingest {n} devices: ventas / peer"),
            get("ventas"),
            get("peer"),
        );
        let same_floor = value(
            find(figures, "ingest", "ventas", at),
            "floor_same_sales_per_s",
        )
        .or(floor_ingest);
        ratio_row(
            &mut out,
            &format!("ingest {n} devices: ventas / in-process floor (same sales)"),
            get("ventas"),
            same_floor,
        );
        ratio_row(
            &mut out,
            &format!("ingest {n} devices: durable / no-flush (group commit)"),
            get("ventas"),
            get("ventas-noflush"),
        );
        let rss = |target| {
            value(
                find(figures, "ingest", target, at),
                "server_rss_under_load_kib",
            )
        };
        ratio_row(
            &mut out,
            &format!("ingest {n} devices: server RSS ventas / peer"),
            rss("ventas"),
            rss("peer"),
        );
    }
    let latency = |target, name| value(find(figures, "latency", target, None), name);
    let floor_latency = value(find(figures, "floor_latency", "floor", None), "sync_p50_ms")
        .zip(value(
            find(figures, "floor_websocket", "floor", None),
            "round_trip_p50_ms",
        ))
        .map(|(sync, round_trip)| sync + round_trip);
    ratio_row(
        &mut out,
        "latency p50: ventas / (in-process sync + websocket round trip)",
        latency("ventas", "latency_p50_ms"),
        floor_latency,
    );
    ratio_row(
        &mut out,
        "latency p50: ventas / peer",
        latency("ventas", "latency_p50_ms"),
        latency("peer", "latency_p50_ms"),
    );
    ratio_row(
        &mut out,
        "latency p99: ventas / peer",
        latency("ventas", "latency_p99_ms"),
        latency("peer", "latency_p99_ms"),
    );
    let reconnect = |target| {
        value(
            find(figures, "reconnect", target, None),
            "until_acknowledged_p50_ms",
        )
    };
    ratio_row(
        &mut out,
        "reconnect: ventas / in-process floor",
        reconnect("ventas"),
        value(find(figures, "floor_reconnect", "floor", None), "sync_ms"),
    );
    ratio_row(
        &mut out,
        "reconnect: ventas / peer",
        reconnect("ventas"),
        reconnect("peer"),
    );
    let idle = |target| {
        value(
            find(figures, "idle", target, None),
            "rss_per_connection_kib",
        )
    };
    ratio_row(
        &mut out,
        "RSS per idle connection: ventas / peer",
        idle("ventas"),
        idle("peer"),
    );
    let storage = find(figures, "floor_storage", "floor", None);
    ratio_row(
        &mut out,
        "storage floor: grouped / per-change flush",
        value(storage, "append_group_flush_per_s"),
        value(storage, "append_flush_each_per_s"),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest(target: &str, per_s: f64) -> Figure {
        Figure::new("ingest", target)
            .param("devices", 10.0)
            .value("sales_acknowledged_per_s", per_s)
    }

    #[test]
    fn figure_lines_round_trip_through_the_report() {
        let figures = [ingest("ventas", 650.0), ingest("peer", 200.0)];
        let text: String = figures
            .iter()
            .map(|f| {
                format!(
                    "noise\nFIGURE {}\n",
                    serde_json::to_string(f).expect("json")
                )
            })
            .collect();
        let parsed = parse(&text);
        assert_eq!(parsed.len(), 2);
        let rendered = render(&parsed);
        assert!(
            rendered.contains("| sales_acknowledged_per_s | 650 | 200 |"),
            "{rendered}"
        );
        assert!(
            rendered.contains("| ingest 10 devices: ventas / peer | 3.25 |"),
            "{rendered}"
        );
    }

    #[test]
    fn ratios_need_both_sides() {
        let rendered = ratios(&[ingest("ventas", 600.0)]);
        assert!(!rendered.contains("ventas / peer"), "{rendered}");
    }

    #[test]
    fn numbers_keep_three_significant_places_below_one() {
        assert_eq!(number(0.0614), "0.061");
        assert_eq!(number(2.5), "2.50");
        assert_eq!(number(1234.6), "1235");
    }
}
