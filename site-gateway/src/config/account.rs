//! Checks of `[[account]]` entries: the SLA, failover sites and the workload.

use std::ops::Range;
use std::path::PathBuf;

use leasehold_federation::ids::{AccountId, SiteId};
use toml::Spanned;

use super::placeholders::{PLACEHOLDERS, braced, unknown_placeholders};
use super::raw::{RawAccount, RawWorkload};
use super::types::{Account, Workload};
use super::validate::{Checker, known};

pub(crate) fn accounts(
    c: &mut Checker<'_>,
    raw: &[RawAccount],
    peers: &[&str],
) -> Option<Vec<Account>> {
    let mut out = Some(Vec::new());
    for (i, a) in raw.iter().enumerate() {
        let name = a.name.get_ref();
        if let Some(first) = raw[..i].iter().find(|b| b.name.get_ref() == name) {
            let msg = format!(
                "account `{name}` at site `{}` is defined twice (first at {})",
                c.site,
                c.source.place(&first.name.span())
            );
            c.error(a.name.span(), msg);
        }
        let dir = std::path::Path::new(a.workload.data_dir.get_ref().trim());
        // The same name twice is reported above, once.
        if let Some(first) = raw[..i].iter().find(|b| {
            let other = std::path::Path::new(b.workload.data_dir.get_ref().trim());
            b.name.get_ref() != name && (dir.starts_with(other) || other.starts_with(dir))
        }) {
            let msg = format!(
                "account `{name}` at site `{}` shares its data_dir with account `{}` ({}): one is, or is inside, the other; each account needs its own, since a server's data is removed when it moves to another account",
                c.site,
                first.name.get_ref(),
                c.source.place(&first.workload.data_dir.span())
            );
            c.error(a.workload.data_dir.span(), msg);
        }
        match (account(c, a, peers), out.as_mut()) {
            (Some(acc), Some(list)) => list.push(acc),
            _ => out = None,
        }
    }
    out
}

fn account(c: &mut Checker<'_>, a: &RawAccount, peers: &[&str]) -> Option<Account> {
    let name = a.name.get_ref();
    let subject = format!("account `{name}` at site `{}`", c.site);
    let id = c.id(&a.name, &format!("site `{}`", c.site), AccountId::parse);
    let (min, max) = (*a.min_servers.get_ref(), *a.max_servers.get_ref());
    if max == 0 {
        c.error(
            a.max_servers.span(),
            format!("{subject}: max_servers is 0; an account needs at least one server"),
        );
    } else if min > max {
        c.error(
            a.min_servers.span(),
            format!("{subject}: min_servers {min} is greater than max_servers {max}"),
        );
    }
    let load = *a.target_load.get_ref();
    if !(load.is_finite() && load > 0.0) {
        c.error(
            a.target_load.span(),
            format!("{subject}: target_load {load} must be a finite number greater than 0"),
        );
    }
    let failover = failover(c, &subject, &a.failover, peers);
    let workload = workload(c, &subject, &a.workload);
    let image = super::machine::image(c, &subject, &a.image);
    Some(Account {
        name: id?,
        min_servers: min,
        max_servers: max,
        priority: a.priority,
        target_load: load,
        failover: failover?,
        pinned: a.pinned,
        workload: workload?,
        image: image.ok()?,
    })
}

fn failover(
    c: &mut Checker<'_>,
    subject: &str,
    list: &[Spanned<String>],
    peers: &[&str],
) -> Option<Vec<SiteId>> {
    let mut out = Some(Vec::new());
    for (i, entry) in list.iter().enumerate() {
        let site = entry.get_ref();
        let problem = if site == c.site {
            Some("is this site itself".to_owned())
        } else if list[..i].iter().any(|e| e.get_ref() == site) {
            Some("is listed twice".to_owned())
        } else if !peers.contains(&site.as_str()) {
            Some(format!("is not a configured peer ({})", known(peers)))
        } else {
            None
        };
        if let Some(problem) = problem {
            c.error(
                entry.span(),
                format!("{subject}: failover site `{site}` {problem}"),
            );
            out = None;
        }
        match (SiteId::parse(site), out.as_mut()) {
            (Ok(id), Some(v)) => v.push(id),
            _ => out = None,
        }
    }
    out
}

fn workload(c: &mut Checker<'_>, subject: &str, w: &RawWorkload) -> Option<Workload> {
    let mut ok = true;
    let mut fail = |c: &mut Checker<'_>, span: Range<usize>, msg: String| {
        c.error(span, format!("{subject}: {msg}"));
        ok = false;
    };
    for (key, value) in [("command", &w.command), ("data_dir", &w.data_dir)] {
        if value.get_ref().trim().is_empty() {
            fail(c, value.span(), format!("workload.{key} is empty"));
        }
    }
    // A node removes an account's data_dir when the server moves to another account: a
    // path that is, or climbs above, the node's work dir or the root would take more.
    let data = std::path::Path::new(w.data_dir.get_ref().trim());
    let climbs = data
        .components()
        .any(|part| matches!(part, std::path::Component::ParentDir));
    let shallow = data.is_absolute() && data.components().count() < 3;
    if !w.data_dir.get_ref().trim().is_empty()
        && (climbs || shallow || data == std::path::Path::new("."))
    {
        fail(
            c,
            w.data_dir.span(),
            format!(
                "workload.data_dir `{}` is removed when the server moves to another account, so it must be a dir of its own: relative under the node's work dir without `..` (e.g. `data/shop`), or absolute at least two levels deep (e.g. `/srv/shop`)",
                w.data_dir.get_ref()
            ),
        );
    }
    let templates = std::iter::once(("command".to_owned(), &w.command))
        .chain(w.args.iter().map(|a| ("args".to_owned(), a)))
        .chain(w.env.iter().map(|(k, v)| (format!("env.{k}"), v)));
    for (key, value) in templates {
        for name in unknown_placeholders(value.get_ref()) {
            fail(
                c,
                value.span(),
                format!(
                    "unknown placeholder `{{{name}}}` in workload.{key}; known placeholders: {}",
                    braced(PLACEHOLDERS)
                ),
            );
        }
    }
    for (key, path) in [
        ("health_path", &w.health_path),
        ("metrics_path", &w.metrics_path),
    ] {
        if let Some(p) = path
            && !p.get_ref().starts_with('/')
        {
            fail(
                c,
                p.span(),
                format!("workload.{key} `{}` must start with '/'", p.get_ref()),
            );
        }
    }
    // The load comes from a gauge on the metrics page: one without the other is unusable.
    match (&w.metrics_path, &w.load_metric) {
        (Some(m), None) => fail(
            c,
            m.span(),
            "workload.metrics_path is set but load_metric is not; name the gauge that is the load"
                .to_owned(),
        ),
        (None, Some(l)) => fail(
            c,
            l.span(),
            "workload.load_metric is set but metrics_path is not; say where the metrics are served"
                .to_owned(),
        ),
        _ => {}
    }
    ok.then(|| Workload {
        software: w.software.get_ref().clone(),
        command: w.command.get_ref().clone(),
        args: w.args.iter().map(|a| a.get_ref().clone()).collect(),
        env: w
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect(),
        data_dir: PathBuf::from(w.data_dir.get_ref()),
        health_path: w.health_path.as_ref().map(|p| p.get_ref().clone()),
        metrics_path: w.metrics_path.as_ref().map(|p| p.get_ref().clone()),
        load_metric: w.load_metric.as_ref().map(|p| p.get_ref().clone()),
        secrets: w.secrets.as_ref().map(|p| c.path(p.get_ref())),
    })
}
