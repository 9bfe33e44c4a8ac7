//! A picture of a campaign, in the manner of Jepsen's timelines: an SVG with the faults as
//! bars on a time axis and, for each account, who owned it at every poll (a colour per
//! site, grey for nobody) with a red strip wherever it was below its SLA minimum. Drawn
//! from the admin polls and the faults as applied, written beside the report.

use std::fmt::Write as _;

use super::poll::{Sample, Timeline};
use super::report::FaultReport;

const LEFT: f64 = 110.0;
const PLOT: f64 = 1000.0;
const ROW: f64 = 34.0;
/// The height of one lane of fault bars (a bar and its label).
const LANE: f64 = 34.0;
const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#bab0ac",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The SVG of a campaign of `duration_ms` over `sites`, `accounts`.
pub fn svg(
    samples: &[Sample],
    sites: &[String],
    accounts: &[String],
    faults: &[FaultReport],
    duration_ms: u64,
) -> String {
    let end_ms = faults
        .iter()
        .map(|fault| fault.applied_end_ms)
        .chain(samples.iter().map(|sample| sample.at_ms))
        .max()
        .unwrap_or(0)
        .max(duration_ms)
        .max(1);
    let x = |ms: u64| LEFT + PLOT * ms as f64 / end_ms as f64;
    // A compound episode's faults overlap: each fault of an episode gets a lane of its own.
    let lane = |ix: usize| {
        faults[..ix]
            .iter()
            .rev()
            .take_while(|before| before.episode == faults[ix].episode)
            .count()
    };
    let lanes = (0..faults.len()).map(lane).max().map_or(1, |last| last + 1);
    let faults_height = LANE * lanes as f64;
    let rows = 2 + accounts.len();
    let height = 40.0 + ROW * rows as f64 + faults_height - LANE + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="11">"#,
        LEFT + PLOT + 20.0
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    // Time axis: a tick every 10 s.
    let axis_y = 30.0;
    let _ = writeln!(
        out,
        r#"<line x1="{LEFT}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="black"/>"#,
        LEFT + PLOT
    );
    for second in (0..=end_ms / 1000).step_by(10) {
        let tick = x(second * 1000);
        let _ = writeln!(
            out,
            r#"<line x1="{tick}" y1="{}" x2="{tick}" y2="{}" stroke="black"/><text x="{tick}" y="{}" text-anchor="middle">{second} s</text>"#,
            axis_y - 4.0,
            axis_y + 4.0,
            axis_y - 8.0
        );
    }
    // Faults.
    let fault_y = axis_y + 12.0;
    let _ = writeln!(out, r#"<text x="4" y="{}">faults</text>"#, fault_y + 14.0);
    for (ix, fault) in faults.iter().enumerate() {
        let (from, to) = (x(fault.applied_start_ms), x(fault.applied_end_ms));
        let y = fault_y + LANE * lane(ix) as f64;
        let _ = writeln!(
            out,
            r##"<rect x="{from}" y="{y}" width="{}" height="18" fill="#e15759" opacity="0.8"><title>{} {}: {}–{} ms</title></rect><text x="{from}" y="{}" font-size="9">{} {}</text>"##,
            (to - from).max(2.0),
            escape(&fault.kind),
            escape(&fault.target),
            fault.applied_start_ms,
            fault.applied_end_ms,
            y + 30.0,
            escape(&fault.kind),
            escape(&fault.target)
        );
    }
    // Owners and the minimum, per account, at every poll instant.
    let timeline = Timeline::new(samples, sites);
    let instants = timeline.instants();
    for (row, account) in accounts.iter().enumerate() {
        let y = fault_y + faults_height - LANE + ROW * (row as f64 + 1.3);
        let _ = writeln!(
            out,
            r#"<text x="4" y="{}">{}</text>"#,
            y + 12.0,
            escape(account)
        );
        for pair in instants.windows(2) {
            let (from, to) = (pair[0], pair[1]);
            let standings = timeline.standing_at(std::slice::from_ref(account), from);
            let Some((_, standing)) = standings.first() else {
                continue;
            };
            let colour = match standing.owners.as_slice() {
                [] => "#d0d0d0",
                [one] => sites
                    .iter()
                    .position(|site| site == one)
                    .map_or("#000000", |ix| PALETTE[ix % PALETTE.len()]),
                // Two sites claiming at once would be a finding: black.
                _ => "#000000",
            };
            let (left, width) = (x(from), (x(to) - x(from)).max(0.5));
            let _ = writeln!(
                out,
                r#"<rect x="{left}" y="{y}" width="{width}" height="16" fill="{colour}"/>"#
            );
            if standing.owners.is_empty() || standing.servers < standing.min_servers {
                let _ = writeln!(
                    out,
                    r##"<rect x="{left}" y="{}" width="{width}" height="5" fill="#c00000"/>"##,
                    y + 18.0
                );
            }
        }
    }
    // Legend.
    let legend_y = height - 12.0;
    let mut legend_x = LEFT;
    for (ix, site) in sites.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<rect x="{legend_x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{legend_y}">owner {}</text>"#,
            legend_y - 10.0,
            PALETTE[ix % PALETTE.len()],
            legend_x + 16.0,
            escape(site)
        );
        legend_x += 110.0;
    }
    let _ = writeln!(
        out,
        r##"<rect x="{legend_x}" y="{}" width="12" height="5" fill="#c00000"/><text x="{}" y="{legend_y}">below the SLA minimum (or no owner)</text>"##,
        legend_y - 6.0,
        legend_x + 16.0
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::poll::AccountSeen;

    fn sample(site: usize, at_ms: u64, owner: Option<&str>, servers: u64) -> Sample {
        Sample {
            site,
            at_ms,
            accounts: Some(vec![AccountSeen {
                name: "shop".into(),
                owner: owner.map(str::to_owned),
                servers,
                min_servers: 1,
                max_servers: 2,
            }]),
        }
    }

    #[test]
    fn owners_are_coloured_by_site_and_a_dip_below_the_minimum_is_marked() {
        let sites = vec!["site-a".to_owned(), "site-b".to_owned()];
        let samples = vec![
            sample(0, 0, Some("site-a"), 1),
            sample(1, 0, Some("site-a"), 0),
            sample(0, 250, Some("site-a"), 0),
            sample(1, 250, Some("site-a"), 0),
            sample(1, 500, Some("site-b"), 1),
            sample(0, 500, Some("site-b"), 0),
            sample(1, 750, Some("site-b"), 1),
        ];
        let faults = vec![FaultReport {
            kind: "gateway-kill".into(),
            target: "site-a".into(),
            start_ms: 200,
            end_ms: 400,
            applied_start_ms: 200,
            applied_end_ms: 400,
            episode: 0,
            outage_ms: Some(250),
            back_after_end_ms: Some(100),
            notes: Vec::new(),
        }];
        let picture = svg(&samples, &sites, &["shop".to_owned()], &faults, 1000);
        assert!(picture.starts_with("<svg"), "{picture}");
        assert!(picture.contains("gateway-kill site-a"));
        assert!(picture.contains(PALETTE[0]), "site-a owned it first");
        assert!(picture.contains(PALETTE[1]), "then site-b");
        assert!(picture.contains("#c00000"), "the dip at 250 ms");
        assert!(picture.trim_end().ends_with("</svg>"));
    }

    /// A compound episode's second fault is drawn in a lane below the first, so that
    /// overlapping bars do not hide each other.
    #[test]
    fn overlapping_faults_get_a_lane_each() {
        let fault = |kind: &str, from: u64, to: u64, episode: usize| FaultReport {
            kind: kind.into(),
            target: "site-a".into(),
            start_ms: from,
            end_ms: to,
            applied_start_ms: from,
            applied_end_ms: to,
            episode,
            outage_ms: None,
            back_after_end_ms: None,
            notes: Vec::new(),
        };
        let faults = vec![
            fault("partition-isolate", 100, 600, 0),
            fault("restart", 300, 400, 0),
            fault("gateway-kill", 800, 900, 1),
        ];
        let picture = svg(
            &[],
            &["site-a".to_owned()],
            &["shop".to_owned()],
            &faults,
            1000,
        );
        let bar_y = |kind: &str| {
            let line = picture
                .lines()
                .find(|line| line.contains(&format!("<title>{kind} ")))
                .unwrap();
            let at = line.find(" y=\"").unwrap() + 4;
            line[at..]
                .split('"')
                .next()
                .unwrap()
                .parse::<f64>()
                .unwrap()
        };
        assert_eq!(bar_y("restart") - bar_y("partition-isolate"), LANE);
        assert_eq!(bar_y("gateway-kill"), bar_y("partition-isolate"));
    }
}
