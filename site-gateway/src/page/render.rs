//! The status page as HTML: a pure function of a [`View`]. Every string that comes from
//! the site (names, reasons, health texts, addresses) goes through [`Esc`], so nothing a
//! node or a config says can become markup or script.

use std::fmt::{self, Display, Write as _};

use crate::journal::AuditRecord;
use crate::model::site::{AccountSnapshot, ServerSnapshot};

use super::{LoanDirection, LoanView, PeerView, View};

pub(crate) const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("refresh.js");

/// Server states in the order an operator reads them: what serves, what is changing, what
/// is broken, what is spare. States added later still show, after these.
pub const STATE_ORDER: [&str; 7] = [
    "serving",
    "starting",
    "draining",
    "failed",
    "maintenance",
    "free",
    "offline",
];

/// Text made safe for HTML element content and quoted attribute values.
struct Esc<'a>(&'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#39;")?,
                _ => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// `text` escaped for HTML content and quoted attributes.
pub fn escape(text: &str) -> String {
    Esc(text).to_string()
}

/// The whole page.
pub fn render(view: &View) -> String {
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail; the fmt::Result only carries `?` through.
    let _ = page(&mut out, view);
    out
}

fn page(out: &mut String, view: &View) -> fmt::Result {
    let site = view.snapshot.site.as_str();
    write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{site} · Leasehold</title>\n\
         <noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>\n\
         <style>\n{STYLE}</style>\n</head>\n<body>\n",
        site = Esc(site),
    )?;
    out.push_str("<div id=\"live\">\n");
    header(out, view)?;
    out.push_str("<main>\n");
    admin_banner(out, view)?;
    certificate_banner(out, view)?;
    config_banner(out, view)?;
    accounts(out, view)?;
    servers(out, &view.snapshot.servers)?;
    out.push_str("<div class=\"pair\">\n");
    sites(out, view)?;
    loans(out, view.loans.as_deref())?;
    out.push_str("</div>\n");
    audit(out, &view.audit)?;
    out.push_str("</main>\n</div>\n");
    write!(
        out,
        "<footer><span id=\"conn\" class=\"conn\">rendered by the gateway; \
         refreshes every 2 s</span> · JSON: <a href=\"/v1/status\">status</a> \
         <a href=\"/v1/accounts\">accounts</a> <a href=\"/v1/servers\">servers</a> \
         <a href=\"/v1/audit\">audit</a> · the demand measured, for <code>leasehold replay</code>: \
         <a href=\"/v1/demand-trace\">demand trace</a></footer>\n<script>\n{SCRIPT}</script>\n\
         </body>\n</html>\n"
    )
}

fn header(out: &mut String, view: &View) -> fmt::Result {
    let snapshot = &view.snapshot;
    let below = snapshot.accounts.iter().filter(|a| !a.sla_met).count();
    let ready = view.rounds > 0;
    write!(
        out,
        "<header class=\"top\">\n<div class=\"brand\"><span class=\"product\">Leasehold</span>\
         <h1 id=\"site\" data-site=\"{site}\">{site}</h1>\
         <span class=\"badge {ready_class}\">{ready_text}</span></div>\n<dl class=\"facts\">\n",
        site = Esc(snapshot.site.as_str()),
        ready_class = if ready { "ok" } else { "warn" },
        ready_text = if ready { "live" } else { "starting" },
    )?;
    fact(out, "uptime", &duration(view.uptime_ms))?;
    fact(out, "rounds", &view.rounds.to_string())?;
    fact(out, "servers", &snapshot.servers.len().to_string())?;
    let accounts = if below == 0 {
        format!("{} · all at SLA", snapshot.accounts.len())
    } else {
        format!("{} · {below} below SLA", snapshot.accounts.len())
    };
    fact(out, "accounts", &accounts)?;
    let latency = match (view.reallocation_ms_p50, view.reallocation_ms_p99) {
        (Some(p50), Some(p99)) => format!(" · p50 {p50} ms · p99 {p99} ms"),
        _ => String::new(),
    };
    fact(
        out,
        "reallocations",
        &format!("{}{latency}", view.reallocations),
    )?;
    if let Some(config) = &view.config {
        let hash = &config.hash[..config.hash.len().min(12)];
        let mut text = format!("{hash} · {} applied", config.reloads_applied);
        if config.reloads_refused > 0 {
            text.push_str(&format!(" · {} refused", config.reloads_refused));
        }
        fact(out, "config", &text)?;
    }
    if !view.viewer.certificates.is_empty() {
        // Always shown, so that a renewal can be seen to have taken; the banner below
        // adds the warning from 30 days before.
        let left: Vec<String> = view
            .viewer
            .certificates
            .iter()
            .map(
                |(which, at)| match u64::try_from(at - view.viewer.now_unix) {
                    Ok(left) if left > 0 => format!("{which} {}", duration(left * 1000)),
                    _ => format!("{which} expired"),
                },
            )
            .collect();
        fact(out, "certificates", &left.join(" · "))?;
    }
    out.push_str("</dl>\n");
    viewer(out, view)?;
    out.push_str("</header>\n");
    Ok(())
}

/// Who is signed in, and the way out.
fn viewer(out: &mut String, view: &View) -> fmt::Result {
    // Nobody signed in: an open page (anonymous_role) or a probe; the banner says if that
    // matters.
    let Some(caller) = view
        .viewer
        .caller
        .as_ref()
        .filter(|caller| caller.name != "anonymous" && caller.name != "-")
    else {
        return Ok(());
    };
    let role = caller.role.map_or("none", |role| role.as_str());
    write!(
        out,
        "<div class=\"viewer\" id=\"viewer\">signed in as <b>{name}</b> <span class=\"sub\">{role}</span>",
        name = Esc(&caller.name),
    )?;
    if view.viewer.can_sign_out {
        out.push_str(
            " <form method=\"post\" action=\"/logout\" class=\"signout\"><button type=\"submit\">sign out</button></form>",
        );
    }
    out.push_str("</div>\n");
    Ok(())
}

/// How long before a certificate expires the page starts to say so.
const CERTIFICATE_WARNING_DAYS: i64 = 30;

/// Certificates that expire within 30 days (or have): renewed before then, or peers, nodes
/// and browsers refuse the site (docs/certificates.md).
fn certificate_banner(out: &mut String, view: &View) -> fmt::Result {
    let soon: Vec<(&str, i64)> = view
        .viewer
        .certificates
        .iter()
        .map(|(which, at)| (which.as_str(), *at - view.viewer.now_unix))
        .filter(|(_, left)| *left < CERTIFICATE_WARNING_DAYS * 86_400)
        .collect();
    if soon.is_empty() {
        return Ok(());
    }
    let expired = soon.iter().any(|(_, left)| *left <= 0);
    writeln!(
        out,
        "<section class=\"card {}\" id=\"certificates-expiring\"><h2>Certificates expire soon</h2>\n<ul>",
        if expired { "alert" } else { "notice" }
    )?;
    for (which, left) in soon {
        let when = if left <= 0 {
            format!(
                "expired {} ago",
                duration(u64::try_from(-left).unwrap_or(0) * 1000)
            )
        } else {
            format!(
                "expires in {}",
                duration(u64::try_from(left).unwrap_or(0) * 1000)
            )
        };
        writeln!(
            out,
            "<li>the {which} certificate {when}</li>",
            which = Esc(which)
        )?;
    }
    out.push_str("</ul>\n<p>Renew it with <code>leasehold certs issue ... --force</code>: the gateway reads its certificates again when their files change, with no restart (docs/certificates.md, Renewing).</p></section>\n");
    Ok(())
}

/// Plain HTTP or anonymous reads on an address others reach: the page says so on top.
fn admin_banner(out: &mut String, view: &View) -> fmt::Result {
    if view.viewer.warnings.is_empty() {
        return Ok(());
    }
    out.push_str("<section class=\"card alert\" id=\"admin-insecure\"><h2>This admin address is not secured</h2>\n<ul>\n");
    for warning in &view.viewer.warnings {
        writeln!(out, "<li>{}</li>", Esc(warning))?;
    }
    out.push_str(
        "</ul>\n<p>docs/operations.md, \"Securing the admin address\", says how.</p></section>\n",
    );
    Ok(())
}

/// A refused edit or a change waiting for a restart: the site runs on another config than
/// the file says, which an operator must see before anything else.
fn config_banner(out: &mut String, view: &View) -> fmt::Result {
    let Some(config) = &view.config else {
        return Ok(());
    };
    if let Some(errors) = &config.last_refused {
        writeln!(
            out,
            "<section class=\"card alert\" id=\"config-refused\"><h2>The last edit of {path} \
             was refused</h2><p>The site keeps running on its last good config ({hash}, applied \
             {applied} UTC). Fix the file; it is read again when it changes.</p>\
             <pre>{errors}</pre></section>",
            path = Esc(&config.path),
            hash = Esc(&config.hash[..config.hash.len().min(12)]),
            applied = clock_utc(config.applied_at_ms),
            errors = Esc(errors),
        )?;
    }
    if !config.needs_restart.is_empty() {
        writeln!(
            out,
            "<section class=\"card notice\" id=\"config-restart\"><h2>Waiting for a restart\
             </h2><p>The file differs from the running config in what only a restart applies: \
             {}</p></section>",
            Esc(&config.needs_restart.join("; "))
        )?;
    }
    Ok(())
}

fn fact(out: &mut String, name: &str, value: &str) -> fmt::Result {
    writeln!(
        out,
        "<div><dt>{}</dt><dd>{}</dd></div>",
        Esc(name),
        Esc(value)
    )
}

fn accounts(out: &mut String, view: &View) -> fmt::Result {
    let snapshot = &view.snapshot;
    write!(
        out,
        "<section class=\"card\" id=\"accounts\">\n<h2>Accounts <small>{}</small></h2>\n",
        snapshot.accounts.len()
    )?;
    if snapshot.accounts.is_empty() {
        out.push_str("<p class=\"empty\">no accounts at this site</p>\n</section>\n");
        return Ok(());
    }
    out.push_str(
        "<table>\n<thead><tr><th>account</th><th>owner</th><th>SLA</th>\
         <th>servers vs demand</th><th>load</th><th>its servers</th></tr></thead>\n<tbody>\n",
    );
    for account in &snapshot.accounts {
        account_row(out, account, &snapshot.servers)?;
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
    Ok(())
}

fn account_row(
    out: &mut String,
    account: &AccountSnapshot,
    servers: &[ServerSnapshot],
) -> fmt::Result {
    let name = account.name.as_str();
    let (sla_class, sla_text) = if account.sla_met {
        ("ok", "SLA met".to_owned())
    } else {
        match account.shortfall {
            Some(short) if short > 0 => ("bad", format!("below SLA · short {short}")),
            _ => ("bad", "below SLA".to_owned()),
        }
    };
    let sla_attr = if account.sla_met { "met" } else { "below" };
    write!(
        out,
        "<tr data-account=\"{name}\" data-sla=\"{sla_attr}\">\
         <td class=\"name\">{name}<div class=\"sub\">priority {priority}</div></td>\
         <td>{owner}",
        name = Esc(name),
        priority = account.priority,
        owner = Esc(account
            .owner
            .as_ref()
            .map_or("none known", |owner| owner.as_str())),
    )?;
    if account.owner.as_ref() != Some(&account.home) {
        write!(
            out,
            "<div class=\"sub\">home {}</div>",
            Esc(account.home.as_str())
        )?;
    }
    write!(
        out,
        "</td><td><span class=\"badge {sla_class}\">{}</span></td><td>",
        Esc(&sla_text)
    )?;
    demand_bar(out, account)?;
    write!(
        out,
        "</td><td class=\"num\">{:.1}<div class=\"sub\">target {:.1}/server</div></td><td>",
        account.load, account.target_load
    )?;
    let mine: Vec<&ServerSnapshot> = servers
        .iter()
        .filter(|server| {
            server.lent_to.is_none() && server.account.as_ref().map(|a| a.as_str()) == Some(name)
        })
        .collect();
    if mine.is_empty() && account.borrowed == 0 {
        out.push_str("<span class=\"muted\">none</span>");
    }
    for server in mine {
        write!(
            out,
            "<span class=\"chip {state}\" title=\"{state}, epoch {epoch}\">{id} \
             <small>{state} · e{epoch}</small></span>",
            state = Esc(server.state),
            epoch = server.epoch,
            id = Esc(server.id.as_str()),
        )?;
    }
    if account.borrowed > 0 {
        write!(
            out,
            "<span class=\"chip serving\" title=\"servers lent by peer sites (GET /v1/loans)\">\
             +{} <small>borrowed</small></span>",
            account.borrowed
        )?;
    }
    out.push_str("</td></tr>\n");
    Ok(())
}

/// Serving (and starting) servers against a scale of the account's maximum, with ticks at
/// its minimum and its current demand: how far it is from what it wants, at a glance.
fn demand_bar(out: &mut String, account: &AccountSnapshot) -> fmt::Result {
    let scale = account
        .max_servers
        .max(account.demand)
        .max(account.servers + account.starting)
        .max(1) as f64;
    let percent = |n: u32| f64::from(n) / scale * 100.0;
    write!(
        out,
        "<div class=\"bar\" role=\"img\" aria-label=\"{serving} serving of demand {demand}\">\
         <div class=\"track\"><span class=\"fill serving\" style=\"width:{w_serving:.1}%\">\
         </span><span class=\"fill starting\" style=\"width:{w_starting:.1}%\"></span></div>\
         <span class=\"tick min\" style=\"left:{w_min:.1}%\" title=\"minimum {min}\"></span>\
         <span class=\"tick demand\" style=\"left:{w_demand:.1}%\" title=\"demand {demand}\"></span>\
         </div><div class=\"sub\"><b>{serving}</b> serving",
        serving = account.servers,
        demand = account.demand,
        min = account.min_servers,
        w_serving = percent(account.servers),
        w_starting = percent(account.starting),
        w_min = percent(account.min_servers),
        w_demand = percent(account.demand),
    )?;
    if account.starting > 0 {
        write!(out, " + {} starting", account.starting)?;
    }
    write!(
        out,
        " · <span class=\"legend demand\"></span>demand {} · <span class=\"legend min\">\
         </span>min {} · max {}</div>",
        account.demand, account.min_servers, account.max_servers
    )
}

fn servers(out: &mut String, servers: &[ServerSnapshot]) -> fmt::Result {
    write!(
        out,
        "<section class=\"card\" id=\"servers\">\n<h2>Servers <small>{}</small></h2>\n",
        servers.len()
    )?;
    let mut states: Vec<&str> = STATE_ORDER.to_vec();
    for server in servers {
        if !states.contains(&server.state) {
            states.push(server.state);
        }
    }
    let groups: Vec<(&str, Vec<&ServerSnapshot>)> = states
        .into_iter()
        .map(|state| {
            let members = servers.iter().filter(|s| s.state == state).collect();
            (state, members)
        })
        .filter(|(_, members): &(&str, Vec<&ServerSnapshot>)| !members.is_empty())
        .collect();
    // A summary line says something only when there are states to compare.
    out.push_str("<div class=\"strip\">");
    for (state, members) in groups.iter().filter(|_| groups.len() > 1) {
        write!(
            out,
            "<span class=\"chip {state}\">{state} <b>{}</b></span>",
            members.len(),
            state = Esc(state)
        )?;
    }
    out.push_str("</div>\n");
    if groups.is_empty() {
        out.push_str("<p class=\"empty\">no servers in this site's inventory</p>\n</section>\n");
        return Ok(());
    }
    // One table, a body per state: the columns line up across the groups.
    out.push_str(
        "<table>\n<thead><tr><th>server</th><th>account</th><th>epoch</th><th>health</th>\
         <th>load</th><th>lease</th><th>service address</th></tr></thead>\n",
    );
    for (state, members) in groups {
        writeln!(
            out,
            "<tbody data-group=\"{state}\"><tr class=\"grouphead\"><th colspan=\"7\">\
             <span class=\"dot {state}\"></span> {state} <small>{count}</small></th></tr>",
            state = Esc(state),
            count = members.len(),
        )?;
        for server in members {
            server_row(out, server)?;
        }
        out.push_str("</tbody>\n");
    }
    out.push_str("</table>\n");
    out.push_str("</section>\n");
    Ok(())
}

/// A machine's line under its health: a re-image in progress step by step, or why it is
/// out of use, or its power (docs/machines.md).
fn machine_note(server: &ServerSnapshot) -> Option<String> {
    let machine = server.machine.as_ref()?;
    let steps = |steps: &[crate::model::site::StepSnapshot]| {
        steps
            .iter()
            .map(|step| format!("{} {}", step.step, duration(step.ms)))
            .collect::<Vec<_>>()
            .join(" · ")
    };
    let note = if let Some(reimage) = &machine.reimage {
        let done = steps(&reimage.done);
        format!(
            "<small class=\"machine reimage\">re-imaging for {account} e{epoch}: <b>{step} {ms}</b>{sep}{done}</small>",
            account = Esc(reimage.account.as_str()),
            epoch = reimage.epoch,
            step = Esc(reimage.step),
            ms = duration(reimage.step_ms),
            sep = if done.is_empty() { "" } else { " after " },
            done = Esc(&done),
        )
    } else if let Some(failed) = &machine.failed {
        format!(
            "<small class=\"machine failed\">machine out of use: {}</small>",
            Esc(failed)
        )
    } else if machine.bmc.starts_with("unreachable") {
        format!(
            "<small class=\"machine failed\">BMC {}</small>",
            Esc(&machine.bmc)
        )
    } else {
        let last = steps(&machine.last_boot);
        format!(
            "<small class=\"machine muted\">machine, power {power}{sep}{last}</small>",
            power = Esc(machine.power),
            sep = if last.is_empty() { "" } else { "; last boot: " },
            last = Esc(&last),
        )
    };
    Some(note)
}

fn server_row(out: &mut String, server: &ServerSnapshot) -> fmt::Result {
    let account = server.account.as_ref().map(|a| a.as_str());
    writeln!(
        out,
        "<tr data-server=\"{id}\" data-state=\"{state}\" data-epoch=\"{epoch}\" \
         data-account=\"{account_attr}\"><td class=\"name\">{id}{offline}</td><td>{account}</td>\
         <td class=\"num\">e{epoch}</td><td>{health}</td><td class=\"num\">{load}</td>\
         <td>{lease}</td><td class=\"mono\">{addr}</td></tr>",
        id = Esc(server.id.as_str()),
        state = Esc(server.state),
        epoch = server.epoch,
        account_attr = Esc(account.unwrap_or("")),
        account = match (account, &server.lent_to) {
            (Some(name), Some(site)) => format!(
                "{} <small class=\"muted\">lent to {}</small>",
                Esc(name),
                Esc(site.as_str())
            ),
            (Some(name), None) => Esc(name).to_string(),
            (None, _) => "<span class=\"muted\">—</span>".to_owned(),
        },
        offline = if server.connected {
            ""
        } else {
            " <small class=\"muted\">not connected</small>"
        },
        health = match machine_note(server) {
            Some(note) => format!("{}<br>{note}", Esc(&server.health)),
            None => Esc(&server.health).to_string(),
        },
        load = server
            .load
            .map(|load| format!("{load:.1}"))
            .unwrap_or_else(|| "—".to_owned()),
        lease = match (server.lease_expires_in_ms, server.lease_revoked) {
            (Some(ms), true) => format!("revoked, ends in {}", duration(ms)),
            (Some(ms), false) => format!("{} left", duration(ms)),
            (None, _) => "<span class=\"muted\">none</span>".to_owned(),
        },
        addr = Esc(&server.service_addr),
    )
}

/// This site and its peers, with liveness.
fn sites(out: &mut String, view: &View) -> fmt::Result {
    out.push_str(
        "<section class=\"card\" id=\"sites\">\n<h2>Sites</h2>\n<table>\n<thead><tr>\
         <th>site</th><th>liveness</th><th>connections</th><th>accounts it homes</th>\
         </tr></thead>\n<tbody>\n",
    );
    let homed: Vec<&str> = view
        .snapshot
        .accounts
        .iter()
        .filter(|account| account.home == view.snapshot.site)
        .map(|account| account.name.as_str())
        .collect();
    writeln!(
        out,
        "<tr data-peer=\"{site}\" data-liveness=\"up\"><td class=\"name\">{site} \
         <div class=\"sub\">this site</div></td><td><span class=\"badge ok\">up</span> \
         <span class=\"sub\">for {uptime}</span></td><td class=\"muted\">—</td>\
         <td>{homed}</td></tr>",
        site = Esc(view.snapshot.site.as_str()),
        uptime = duration(view.uptime_ms),
        homed = Esc(&homed.join(", ")),
    )?;
    let peers: &[PeerView] = view.peers.as_deref().unwrap_or(&[]);
    for peer in peers {
        let class = match peer.liveness.as_str() {
            "up" => "ok",
            "suspect" => "warn",
            _ => "bad",
        };
        let mut detail = Vec::new();
        if let Some(rtt) = peer.rtt_ms {
            detail.push(format!("rtt {rtt:.1} ms"));
        }
        match peer.silent_ms {
            Some(ms) if peer.liveness != "up" => detail.push(format!("silent {}", duration(ms))),
            None if peer.liveness != "up" => detail.push("never heard from".to_owned()),
            _ => {}
        }
        if let Some(error) = peer.last_error.as_ref().filter(|_| !peer.dialled) {
            detail.push(format!("dialling fails: {error}"));
        }
        let connections = match (peer.dialled, peer.dialled_in) {
            (true, true) => "both ways",
            (true, false) => "we dialled",
            (false, true) => "it dialled",
            (false, false) => "none",
        };
        writeln!(
            out,
            "<tr data-peer=\"{name}\" data-liveness=\"{liveness}\"><td class=\"name\">{name}\
             <div class=\"sub mono\">{addr}</div></td><td><span class=\"badge {class}\">\
             {liveness}</span> <span class=\"sub\">{detail}</span></td><td>{connections}</td>\
             <td>{accounts}</td></tr>",
            name = Esc(&peer.name),
            addr = Esc(&peer.addr),
            liveness = Esc(&peer.liveness),
            detail = Esc(&detail.join(" · ")),
            accounts = if peer.accounts.is_empty() {
                "<span class=\"muted\">—</span>".to_owned()
            } else {
                Esc(&peer.accounts.join(", ")).to_string()
            },
        )?;
    }
    out.push_str("</tbody>\n</table>\n");
    match &view.peers {
        None => out.push_str("<p class=\"empty\" id=\"no-peers\">no peers connected yet</p>\n"),
        Some(peers) if peers.is_empty() => out.push_str(
            "<p class=\"empty\" id=\"no-peers\">no peers configured ([[peer]] in the site \
             file)</p>\n",
        ),
        Some(_) => {}
    }
    out.push_str("</section>\n");
    Ok(())
}

fn loans(out: &mut String, loans: Option<&[LoanView]>) -> fmt::Result {
    out.push_str("<section class=\"card\" id=\"loans\">\n<h2>Loans</h2>\n");
    let loans = loans.unwrap_or(&[]);
    if loans.is_empty() {
        out.push_str("<p class=\"empty\" id=\"no-loans\">no loans</p>\n</section>\n");
        return Ok(());
    }
    out.push_str(
        "<table>\n<thead><tr><th></th><th>server</th><th>site</th><th>account</th>\
         <th>epoch</th><th>lease</th></tr></thead>\n<tbody>\n",
    );
    for loan in loans {
        let (direction, class) = match loan.direction {
            LoanDirection::In => ("borrowed from", "in"),
            LoanDirection::Out => ("lent to", "out"),
        };
        writeln!(
            out,
            "<tr data-loan=\"{server}\"><td><span class=\"badge {class}\">{direction}</span>\
             </td><td class=\"name\">{server}</td><td>{site}</td><td>{account}</td>\
             <td class=\"num\">e{epoch}</td><td>{lease}</td></tr>",
            server = Esc(&loan.server),
            site = Esc(&loan.site),
            account = Esc(&loan.account),
            epoch = loan.epoch,
            lease = loan
                .expires_in_ms
                .map(|ms| format!("{} left", duration(ms)))
                .unwrap_or_else(|| "—".to_owned()),
        )?;
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
    Ok(())
}

fn audit(out: &mut String, records: &Result<Vec<AuditRecord>, String>) -> fmt::Result {
    out.push_str(
        "<section class=\"card\" id=\"audit\">\n<h2>Latest decisions \
         <small>audit log, newest first</small></h2>\n",
    );
    let records = match records {
        Ok(records) => records,
        Err(failure) => {
            write!(
                out,
                "<p class=\"empty bad\">cannot read the audit log: {}</p>\n</section>\n",
                Esc(failure)
            )?;
            return Ok(());
        }
    };
    if records.is_empty() {
        out.push_str("<p class=\"empty\">no decisions yet</p>\n</section>\n");
        return Ok(());
    }
    out.push_str(
        "<table>\n<thead><tr><th>#</th><th>time (UTC)</th><th>kind</th><th>server</th>\
         <th>account</th><th>epoch</th><th>reason</th></tr></thead>\n<tbody>\n",
    );
    for record in records.iter().rev() {
        let entry = &record.entry;
        let kind = kind_name(record);
        let account = match (&entry.from, &entry.account) {
            (Some(from), Some(to)) => format!("{} → {}", from.as_str(), to.as_str()),
            (None, Some(to)) => to.as_str().to_owned(),
            (Some(from), None) => format!("{} → free", from.as_str()),
            (None, None) => String::new(),
        };
        writeln!(
            out,
            "<tr data-seq=\"{seq}\"><td class=\"num muted\">{seq}</td><td class=\"mono\">{time}\
             </td><td><span class=\"kind {kind}\">{kind}</span></td><td class=\"name\">{server}\
             </td><td>{account}</td><td class=\"num\">{epoch}</td><td class=\"reason\">{reason}\
             </td></tr>",
            seq = record.seq,
            time = clock_utc(record.wall_ms),
            kind = Esc(&kind),
            server = Esc(entry.server.as_ref().map(|s| s.as_str()).unwrap_or("")),
            account = Esc(&account),
            epoch = entry
                .epoch
                .map(|epoch| epoch.to_string())
                .unwrap_or_default(),
            reason = Esc(&entry.reason),
        )?;
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
    Ok(())
}

/// The kind as the API spells it (`server_failed`), so page, CLI and JSON agree.
fn kind_name(record: &AuditRecord) -> String {
    serde_json::to_value(record.entry.kind)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", record.entry.kind))
}

/// `HH:MM:SS` of a wall-clock time in milliseconds since the Unix epoch, in UTC: the page
/// has no time zone of its own, and UTC is what logs across sites share.
fn clock_utc(wall_ms: u64) -> String {
    let seconds = wall_ms / 1000;
    let day = seconds % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day / 60 % 60, day % 60)
}

/// A short human duration: `850 ms`, `42 s`, `3m 05s`, `2h 03m`, `3d 04h`.
fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms} ms"),
        1..60 => format!("{s} s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d {:02}h", s / 86_400, s / 3600 % 24),
    }
}

#[cfg(test)]
mod tests {
    use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId};

    use super::*;
    use crate::actors::master::ConfigStatus;
    use crate::model::effects::{AuditEntry, AuditKind};
    use crate::model::site::SiteSnapshot;

    const HOSTILE: &str = "<script>alert('x')</script> & \"quoted\"";

    fn view(reason: &str, health: &str) -> View {
        let site = SiteId::parse("site-a").expect("valid site id");
        let shop = AccountId::parse("shop").expect("valid account id");
        View {
            snapshot: SiteSnapshot {
                site: site.clone(),
                servers: vec![ServerSnapshot {
                    id: ServerId::parse("a1").expect("valid server id"),
                    state: "serving",
                    account: Some(shop.clone()),
                    epoch: 3,
                    health: health.to_owned(),
                    load: Some(1.5),
                    service_addr: "127.0.0.1:8101".to_owned(),
                    connected: true,
                    lease_expires_in_ms: Some(1800),
                    lease_revoked: false,
                    lent_to: None,
                    machine: None,
                    maintenance: None,
                    agent_version: None,
                    agent_protocol: None,
                    certificate_expires: None,
                }],
                accounts: vec![AccountSnapshot {
                    name: shop.clone(),
                    home: site.clone(),
                    owner: Some(site),
                    ownership_term: None,
                    ownership_expires_in_ms: None,
                    min_servers: 1,
                    max_servers: 2,
                    priority: 20,
                    target_load: 5.0,
                    demand: 2,
                    servers: 1,
                    starting: 0,
                    borrowed: 0,
                    load: 1.5,
                    sla_met: false,
                    shortfall: Some(1),
                    endpoints: vec!["127.0.0.1:8101".to_owned()],
                }],
            },
            uptime_ms: 65_000,
            rounds: 650,
            reallocations: 1,
            reallocation_ms_p50: Some(44),
            reallocation_ms_p99: Some(58),
            config: Some(ConfigStatus {
                path: "configs/site-a.toml".into(),
                hash: "ef35890949b4a3a8ee98".into(),
                applied_at_ms: 0,
                last_refused: None,
                reloads_applied: 1,
                reloads_refused: 0,
                needs_restart: Vec::new(),
            }),
            audit: Ok(vec![AuditRecord {
                seq: 7,
                wall_ms: 1_795_644_381_148,
                mono_ns: 0,
                entry: AuditEntry {
                    kind: AuditKind::ServerFailed,
                    server: Some(ServerId::parse("a1").expect("valid server id")),
                    account: Some(shop),
                    from: None,
                    epoch: Some(Epoch::from_journal(3)),
                    peer: None,
                    term: None,
                    reason: reason.to_owned(),
                },
            }]),
            peers: None,
            loans: None,
            viewer: Default::default(),
        }
    }

    #[test]
    fn escape_turns_markup_into_text() {
        assert_eq!(
            escape(HOSTILE),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quoted&quot;"
        );
        assert_eq!(escape("plain a1 → shop"), "plain a1 → shop");
    }

    #[test]
    fn hostile_reasons_and_health_texts_render_as_text_not_markup() {
        let html = render(&view(HOSTILE, &format!("unhealthy: {HOSTILE}")));
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("\"quoted\""), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
            "{html}"
        );
        // The page's own script is the only one.
        assert_eq!(html.matches("<script>").count(), 1, "{html}");
    }

    #[test]
    fn the_page_shows_accounts_servers_and_decisions() {
        let html = render(&view("a1 missed 4 heartbeats", "healthy"));
        assert!(html.contains("<meta name=\"viewport\""));
        assert!(html.contains("<title>site-a · Leasehold</title>"));
        assert!(html.contains("data-account=\"shop\" data-sla=\"below\""));
        assert!(html.contains("below SLA · short 1"));
        assert!(html.contains("data-server=\"a1\" data-state=\"serving\" data-epoch=\"3\""));
        assert!(html.contains("<span class=\"kind server_failed\">server_failed</span>"));
        assert!(html.contains("a1 missed 4 heartbeats"));
        assert!(html.contains("no peers connected yet"));
        assert!(html.contains("no loans"));
        assert!(html.contains("1m 05s"));
        assert!(html.contains("ef35890949b4 · 1 applied"));
        assert!(!html.contains("config-refused"));
        let mut alone = view("r", "healthy");
        alone.peers = Some(Vec::new());
        assert!(render(&alone).contains("no peers configured"));
    }

    #[test]
    fn peers_and_loans_show_when_the_gateway_has_them() {
        let mut with = view("r", "healthy");
        with.peers = Some(vec![PeerView {
            name: "site-b".into(),
            addr: "127.0.0.1:7202".into(),
            liveness: "up".into(),
            rtt_ms: Some(0.4),
            silent_ms: Some(120),
            dialled: true,
            dialled_in: true,
            accounts: vec!["media".into()],
            last_error: None,
        }]);
        with.loans = Some(vec![LoanView {
            direction: LoanDirection::Out,
            server: "a4".into(),
            site: "site-b".into(),
            account: "media".into(),
            epoch: 9,
            expires_in_ms: Some(1500),
        }]);
        let html = render(&with);
        assert!(html.contains("data-peer=\"site-b\" data-liveness=\"up\""));
        assert!(html.contains("rtt 0.4 ms"));
        assert!(!html.contains("no peers connected yet"));
        assert!(html.contains("lent to"));
        assert!(!html.contains("no loans"));
    }

    #[test]
    fn durations_and_clock_read_naturally() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(42_000), "42 s");
        assert_eq!(duration(185_000), "3m 05s");
        assert_eq!(duration(7_380_000), "2h 03m");
        assert_eq!(clock_utc(1_795_644_381_148), "22:06:21");
    }

    #[test]
    fn a_refused_config_edit_is_a_banner_with_its_errors() {
        let mut refused = view("r", "healthy");
        if let Some(config) = &mut refused.config {
            config.last_refused =
                Some("configs/site-a.toml:12:7: min_servers 9 is greater than <max>".into());
            config.reloads_refused = 1;
        }
        let html = render(&refused);
        assert!(html.contains("id=\"config-refused\""), "{html}");
        assert!(
            html.contains("min_servers 9 is greater than &lt;max&gt;"),
            "{html}"
        );
        assert!(html.contains("1 refused"), "{html}");
    }

    #[test]
    fn an_unsecured_address_is_a_banner_and_the_viewer_is_named() {
        let mut with = view("r", "h");
        assert!(!render(&with).contains("admin-insecure"));
        with.viewer = crate::page::Viewer {
            caller: Some(crate::admin::tokens::Caller {
                name: "<alice>".to_owned(),
                role: Some(crate::admin::tokens::Role::Read),
            }),
            warnings: vec!["the admin address 10.0.0.1:7101 serves plain HTTP".to_owned()],
            can_sign_out: true,
            certificates: Vec::new(),
            now_unix: 0,
        };
        let html = render(&with);
        assert!(html.contains("id=\"admin-insecure\""), "{html}");
        assert!(html.contains("10.0.0.1:7101 serves plain HTTP"), "{html}");
        assert!(html.contains("signed in as <b>&lt;alice&gt;</b>"), "{html}");
        assert!(html.contains("action=\"/logout\""), "{html}");
    }

    #[test]
    fn certificates_within_30_days_are_a_banner() {
        let mut with = view("r", "h");
        let day = 86_400;
        with.viewer.now_unix = 1_000 * day;
        with.viewer.certificates = vec![("site".into(), 1_365 * day), ("ca".into(), 4_650 * day)];
        let html = render(&with);
        assert!(!html.contains("certificates-expiring"), "{html}");
        // Time left on each, whether or not it is soon.
        assert!(
            html.contains("<dt>certificates</dt><dd>site 365d 00h · ca 3650d 00h</dd>"),
            "{html}"
        );
        with.viewer
            .certificates
            .push(("admin".into(), 1_000 * day + 12 * day));
        let html = render(&with);
        assert!(html.contains("id=\"certificates-expiring\""), "{html}");
        assert!(
            html.contains("the admin certificate expires in 12d 00h"),
            "{html}"
        );
        assert!(!html.contains("the site certificate"), "{html}");
        with.viewer.certificates = vec![("site".into(), 999 * day)];
        let html = render(&with);
        assert!(
            html.contains("<dt>certificates</dt><dd>site expired</dd>"),
            "{html}"
        );
        assert!(
            html.contains("the site certificate expired 1d 00h ago"),
            "{html}"
        );
        assert!(
            html.contains("card alert\" id=\"certificates-expiring"),
            "{html}"
        );
    }
}
