//! docs/operations.md walked as the operator it is written for: every section that gives
//! `$ ` commands (the test fails naming any it does not walk). "An operator's day" first:
//! the test takes every `$ ` line of its fenced blocks and runs them in order with `sh -c`
//! in a scratch folder that holds copies of configs/site-*.toml, the built binary first on
//! PATH. What the prose asks between commands (an edit, a refused edit, a restart, node
//! agents stopped) the test does where the prose says, and before each command whose output
//! the doc shows it waits, on the admin API, for the state the prose describes. Then, on
//! the same federation: "Securing the admin address" (site-a on HTTPS with the doc's
//! certificate, tokens and `[admin]` block, and what a client sees), "Maintenance" (back on
//! plain HTTP, with a `write` token), `leasehold --version`, "Backups" (a backup, and a
//! restore into the stopped gateway's state directory), "Before an edit" (a replay of the
//! shipped trace against an edited copy of its site), "Alerts" (promtool), "`leasehold
//! status`" (the demo's burst, made by raising shop's minimum) and "`leasehold audit`".
//! Last, with the federation stopped, `scripts/restart-gateway.sh` runs its own. A line
//! whose tool this machine lacks is skipped, with the reason printed at the end.
//!
//! Each command must exit as the doc says and print what the doc shows in shape, not in
//! values (chaos-tests' harness/doc_shape.rs): the same `Field = ` names, headings and
//! table headers, the same names in a table's first column, the same JSON keys (and the
//! same string values where they hold no number), the same HTTP status and headers, the
//! same sentences with their numbers and hashes masked, and every audit kind the doc shows.
//! Outputs the doc took from a demo run keep their layout (fields, headings, headers) but
//! not their rows. So a changed flag, a renamed column or a reworded line that the doc does
//! not follow turns this red.
//!
//! The federation listens on the fixed ports of configs/, as tests/demo.rs does (test
//! binaries run one at a time); a port already in use fails the test at once, naming it.
//! Background lines (`... &`) run under the harness's process guards (docs/decisions.md,
//! D-25): whatever they start carries the guard's marker and is killed when the test ends,
//! passed or panicked; at the end no process of the walk may be left.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use leasehold_chaos_tests::harness::admin::{get_json, get_text};
use leasehold_chaos_tests::harness::doc_shape::*;
use leasehold_chaos_tests::harness::doc_walk::*;
use leasehold_chaos_tests::harness::wait_for;
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read_doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

// ---------------------------------------------------------------------------------------
// The federation, as the admin API shows it.

/// The `KEY = "HOST:PORT"` lines of a config whose key ends in `_addr`.
fn addresses(config: &str) -> Vec<(String, SocketAddr)> {
    config
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            let key = key.trim();
            let value = value.split('#').next()?.trim().trim_matches('"');
            key.ends_with("_addr")
                .then(|| Some((key.to_owned(), value.parse().ok()?)))
                .flatten()
        })
        .collect()
}

/// Fails at once, naming them, if any of the configs' fixed ports is taken.
fn ports_are_free(operator: &Operator) {
    let taken = taken_ports(operator);
    assert!(
        taken.is_empty(),
        "the fixed ports of configs/ are in use, so the doc's federation cannot start: {taken:?} \
         (a `leasehold demo`, a federation started by hand from configs/, or another test?)"
    );
}

/// The configs' fixed ports that something holds, each with its site and key.
fn taken_ports(operator: &Operator) -> Vec<String> {
    let mut taken = Vec::new();
    for site in ["site-a", "site-b", "site-c"] {
        for (key, addr) in addresses(&operator.read(&format!("{site}.toml"))) {
            // QUIC listens on UDP; the admin API and the workloads on TCP.
            let free = if key == "federation_addr" || key == "management_addr" {
                UdpSocket::bind(addr).is_ok()
            } else {
                TcpListener::bind(addr).is_ok()
            };
            if !free {
                taken.push(format!("{site} {key} {addr}"));
            }
        }
    }
    taken
}

fn admin_addr(operator: &Operator) -> SocketAddr {
    addresses(&operator.read("site-a.toml"))
        .into_iter()
        .find(|(key, _)| key == "admin_addr")
        .map(|(_, addr)| addr)
        .expect("site-a.toml has an admin_addr")
}

/// Waits until `holds` says the admin API of site-a shows what the prose describes.
fn wait_until(what: &str, admin: SocketAddr, holds: impl Fn(&Api) -> Result<(), String>) {
    wait_until_or_show(what, admin, None, holds);
}

/// [`wait_until`], showing the end of `log` (a gateway's, started in the background) if it
/// never holds: a gateway that did not come up says why there.
fn wait_until_or_show(
    what: &str,
    admin: SocketAddr,
    log: Option<&Path>,
    holds: impl Fn(&Api) -> Result<(), String>,
) {
    let result = wait_for(what, WAIT, || {
        let api = Api::read(admin)?;
        holds(&api).map_err(|why| format!("{why}\n{api}"))
    });
    if let Err(error) = result {
        let tail = log
            .and_then(|log| std::fs::read_to_string(log).ok())
            .map(|text| {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(40)..].join("\n")
            })
            .unwrap_or_default();
        panic!("{error}\n--- the end of the gateway's log\n{tail}");
    }
}

/// One reading of site-a's admin API.
struct Api {
    status: Value,
    servers: Vec<Value>,
    accounts: Vec<Value>,
    peers: Vec<Value>,
    loans: Value,
}

impl Api {
    fn read(admin: SocketAddr) -> Result<Api, String> {
        let array = |path: &str| -> Result<Vec<Value>, String> {
            get_json(admin, path)?
                .as_array()
                .cloned()
                .ok_or_else(|| format!("{path} is not an array"))
        };
        Ok(Api {
            status: get_json(admin, "/v1/status")?,
            servers: array("/v1/servers")?,
            accounts: array("/v1/accounts")?,
            peers: array("/v1/peers")?,
            loans: get_json(admin, "/v1/loans")?,
        })
    }

    fn server(&self, id: &str) -> &Value {
        self.servers
            .iter()
            .find(|server| server["id"] == id)
            .unwrap_or(&Value::Null)
    }

    fn account(&self, name: &str) -> &Value {
        self.accounts
            .iter()
            .find(|account| account["name"] == name)
            .unwrap_or(&Value::Null)
    }

    fn count_in(&self, state: &str) -> usize {
        self.servers.iter().filter(|s| s["state"] == state).count()
    }

    fn borrowed(&self) -> &[Value] {
        self.loans["borrowed"].as_array().map_or(&[], Vec::as_slice)
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let brief = |items: &[Value], keys: &[&str]| -> String {
            items
                .iter()
                .map(|item| {
                    keys.iter()
                        .map(|key| format!("{key}={}", item[*key]))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
                .join("\n  ")
        };
        write!(
            f,
            "servers:\n  {}\naccounts:\n  {}\npeers:\n  {}\nloans: {}\nconfig: {}",
            brief(&self.servers, &["id", "state", "account", "connected"]),
            brief(
                &self.accounts,
                &["name", "owner", "servers", "borrowed", "min_servers"]
            ),
            brief(&self.peers, &["name", "state", "accounts"]),
            self.loans,
            self.status["config"],
        )
    }
}

fn check(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why()) }
}

/// The newest audit seq and the number of `config` records, from `/v1/audit`.
fn audit_summary(admin: SocketAddr) -> (u64, usize) {
    let records = get_json(admin, "/v1/audit?limit=1000").unwrap_or_else(|error| panic!("{error}"));
    let records = records.as_array().cloned().unwrap_or_default();
    let newest = records
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .unwrap_or(0);
    let configs = records.iter().filter(|r| r["kind"] == "config").count();
    (newest, configs)
}

#[test]
fn the_operations_doc_runs_as_it_says() {
    let started = Instant::now();
    let doc = read_doc();
    let day = section(&doc, None, "## Securing the admin address");
    let securing = section(&doc, Some(SECURING), "## Maintenance");
    let maintenance = section(&doc, Some(MAINTENANCE), "## Installing");
    let datacenters = section(&doc, Some(DATACENTERS), "## Secrets");
    let backups = section(&doc, Some(BACKUPS), "## Runbooks");
    let what_if = section(&doc, Some(WHAT_IF), ALERTS);
    let alerts = section(&doc, Some(ALERTS), "## Reading a site");
    // With "Reading a site" before it, which says where its outputs come from.
    let status_section = section(&doc, Some("## Reading a site"), "## The status page");
    assert!(status_section.contains(&format!("\n{STATUS}\n")));
    let audit_section = section_to_end(&doc, AUDIT);
    let unwalked: Vec<String> = sections_with_commands(&doc)
        .into_iter()
        .filter(|heading| !WALKED.contains(&heading.as_str()))
        .collect();
    assert!(
        unwalked.is_empty(),
        "docs/operations.md shows `$ ` commands in sections this test does not walk: {unwalked:?}"
    );
    let mut script = Script::of(day);

    let mut op = Operator::new(Path::new(BINARY));
    // "with copies of `configs/site-a.toml`, `site-b.toml` and `site-c.toml`"
    for site in ["site-a", "site-b", "site-c"] {
        op.copy_in(
            &repo().join(format!("configs/{site}.toml")),
            &format!("{site}.toml"),
        );
    }
    ports_are_free(&op);
    let admin = admin_addr(&op);

    // **Start the federation.** The CA and the certificates.
    let mut first_two = String::new();
    for at in 0.. {
        match script.items.front() {
            Some(Item::Command(command)) if command.line.contains("leasehold certs") => {}
            _ => {
                assert!(at >= 2, "the doc makes fewer than two certificates' worth");
                break;
            }
        }
        let command = script.command("a `leasehold certs` line", |_| true);
        let printed = op.run(&command, Fit::Whole);
        if at < 2 {
            first_two.push_str(&printed.stdout);
        }
    }
    quote(day, "The first two printed:");
    let shown = script.output("what the first two certificate commands printed");
    if let Err(diff) = same_shape(
        "the first two certs commands",
        &shown,
        &first_two,
        Fit::Whole,
    ) {
        panic!("{diff}");
    }

    // "Start site-a's gateway and its four node agents first"
    let gateway_a = script.command("site-a's gateway", |l| {
        background(l) && l.contains("gateway run") && l.contains("site-a.toml")
    });
    op.start(&gateway_a);
    let agents_a = script.command("site-a's node agents", |l| {
        background(l) && l.contains("node run")
    });
    op.start(&agents_a);
    quote(
        day,
        "its servers are connected and free, and its accounts have no owner",
    );
    wait_until(
        "site-a's servers connected and free, its accounts unowned",
        admin,
        |api| {
            check(api.servers.len() == 4 && api.count_in("free") == 4, || {
                "not every server is free".into()
            })?;
            check(api.servers.iter().all(|s| s["connected"] == true), || {
                "not every server is connected".into()
            })?;
            check(
                !api.accounts.is_empty() && api.accounts.iter().all(|a| a["owner"].is_null()),
                || "an account has an owner".into(),
            )
        },
    );
    let status = script.command("`leasehold status`", is_status);
    op.run_reader(&status, Fit::Whole);

    // "Then start the other two gateways and their node agents"
    for _ in 0..4 {
        let line = script.command("the other sites' gateways and node agents", background);
        op.start(&line);
    }
    quote(day, "The peers are up with the accounts they home");
    quote(day, "each account got its minimum; two servers are free");
    wait_until(
        "peers up, site-a owning its accounts at their minimum",
        admin,
        |api| {
            check(
                api.peers.len() == 2
                    && api.peers.iter().all(|p| {
                        p["state"] == "up"
                            && p["accounts"].as_array().is_some_and(|a| !a.is_empty())
                    }),
                || "a peer is not up, or has not told its accounts".into(),
            )?;
            check(
                api.accounts.iter().all(|a| {
                    a["owner"] == "site-a" && a["servers"].as_u64() >= a["min_servers"].as_u64()
                }),
                || "an account is not owned by site-a or below its minimum".into(),
            )?;
            check(api.count_in("free") == 2, || "not two servers free".into())
        },
    );
    let status = script.command("`leasehold status`", is_status);
    op.run_reader(&status, Fit::Whole);
    let accounts = script.command("`curl .../v1/accounts | jq`", |l| {
        l.contains("/v1/accounts")
    });
    op.run_reader(&accounts, Fit::Whole);

    // **Change an SLA.** "Raise shop's `min_servers` from 1 to 3."
    quote(day, "Raise shop's `min_servers` from 1 to 3");
    let diff = script.command("`leasehold config diff`", |l| l.contains("config diff"));
    let new_file = diff
        .line
        .split_whitespace()
        .last()
        .expect("config diff names two files")
        .to_owned();
    let edited = raise_min_servers(&op.read("site-a.toml"), "shop", 1, 3);
    op.write(&new_file, &edited);
    op.run(&diff, Fit::Whole);
    let save = script.command("saving the edit (`mv`)", |l| l.starts_with("mv "));
    op.run(&save, Fit::Whole);

    // "Within the next round shop has its three servers"
    wait_until("shop serving on three servers", admin, |api| {
        check(api.account("shop")["servers"] == 3, || {
            "shop is not on 3".into()
        })
    });
    let audit = script.command("`leasehold audit`", is_audit);
    op.run_reader(&audit, Fit::Whole);

    // **A bad edit is refused**: "After saving the file with `priority = twenty`,
    // `leasehold status` says:"
    quote(
        day,
        "After saving the file with `priority = twenty`, `leasehold status` says:",
    );
    let good = op.read("site-a.toml");
    let (_, configs_before) = audit_summary(admin);
    let bad = good.replacen("priority = 20", "priority = twenty", 1);
    assert_ne!(bad, good, "site-a.toml has no `priority = 20` to break");
    op.write("site-a.toml", &bad);
    let refused = script.output("the status of a refused edit");
    // The doc's `Config = ...` line ends with the counts: those the status must reach.
    let counts = refused
        .iter()
        .find_map(|line| line.split_once(", ").map(|(_, rest)| rest.to_owned()))
        .expect("the refused edit's block shows the Config line's counts");
    let mut last_status = String::new();
    let waited = wait_for("the refused edit in `leasehold status`", WAIT, || {
        let printed = op.shell("leasehold status");
        last_status = printed.stdout.clone();
        if !printed.ok {
            return Err(printed.context());
        }
        check(
            printed
                .stdout
                .lines()
                .any(|l| l.starts_with("Config") && l.ends_with(&counts)),
            || format!("no Config line ending in `{counts}`:\n{}", printed.stdout),
        )
    });
    if let Err(error) = waited {
        panic!("{error}");
    }
    if let Err(diff) = same_shape("the refused edit", &refused, &last_status, Fit::Excerpt) {
        panic!("{diff}");
    }
    // "and `/metrics` counts it (`leasehold_config_reloads_total{...} 1`)"
    let series = code_span(day, "leasehold_config_reloads_total");
    let metrics = get_text(admin, "/metrics").unwrap_or_else(|error| panic!("{error}"));
    assert!(
        metrics.lines().any(|line| line == series),
        "/metrics has no line `{series}`:\n{metrics}"
    );
    // "the status page shows the same error in a red banner"
    quote(day, "the status page shows the same error");
    let error_line = refused
        .iter()
        .find_map(|line| line.find("syntax error").map(|at| &line[at..]))
        .expect("the refused edit's block shows the error");
    let page = get_text(admin, "/").unwrap_or_else(|error| panic!("{error}"));
    assert!(
        page.contains(error_line) || page.contains(&error_line.replace('`', "&#96;")),
        "the status page does not show `{error_line}`"
    );
    // "Saving the good file again applies it (`2 applied, 1 refused`; ... the gateway logs
    // "config file is back to the running config; refusal cleared" and the audit log gets
    // no new record)"
    op.write("site-a.toml", &good);
    let counts = quote(day, "2 applied, 1 refused");
    let cleared = quote(
        day,
        "config file is back to the running config; refusal cleared",
    );
    quote(day, "the audit log gets no new record");
    wait_until("the good file applied again", admin, |api| {
        let config = &api.status["config"];
        check(
            config["reloads_applied"] == 2
                && config["reloads_refused"] == 1
                && config["last_refused"].is_null(),
            || format!("not yet `{counts}`"),
        )
    });
    let printed = op.shell("leasehold status");
    assert!(printed.stdout.contains(counts), "{}", printed.context());
    let gateway_log = op.background[0].output();
    assert!(
        gateway_log.contains(cleared),
        "site-a's gateway did not log \"{cleared}\":\n{gateway_log}"
    );
    let (_, configs_after) = audit_summary(admin);
    assert_eq!(
        configs_after, configs_before,
        "saving the running config again added a config record to the audit log"
    );

    // **A restart borrows**: "`kill -TERM` the gateway and wait for it to exit", "stop a2's
    // and a3's node agents the same way", "then start the gateway at once".
    quote(day, "`kill -TERM` the gateway and wait for it to exit");
    quote(day, "stop a2's and a3's node agents the same way");
    let exit = terminate("gateway run --config site-a.toml", 1);
    terminate("--id a2 ", 1);
    terminate("--id a3 ", 1);
    let json_gateway = script.command("site-a's gateway, logging JSON", |l| {
        background(l) && l.contains("--log-format json") && l.contains("site-a.toml")
    });
    let log = op.start(&json_gateway);
    op.log_shows(&json_gateway, &log);
    eprintln!("site-a's gateway took {exit:?} to exit on SIGTERM");

    // "While the loans run, the Loans section of `leasehold status` lists them"
    quote(
        day,
        "borrows from site-b once its start-up grace (3 s) is over",
    );
    wait_until("two servers borrowed, serving", admin, |api| {
        let serving = api
            .borrowed()
            .iter()
            .filter(|l| l["state"] == "serving")
            .count();
        check(serving == 2 && api.count_in("failed") == 2, || {
            "not two loans serving and two servers failed".into()
        })
    });
    let loans = script.command("`leasehold status` with the Loans", is_status);
    op.run_reader(&loans, Fit::Whole);

    // "Start a2's and a3's agents again"
    quote(day, "Start a2's and a3's agents again");
    let agents = script.command("a2's and a3's node agents", |l| {
        background(l) && l.contains("node run")
    });
    op.start(&agents);
    quote(
        day,
        "site-a serves from its own servers again, and gives the loans back",
    );
    wait_until(
        "site-a on its own servers again, the loans returned",
        admin,
        |api| {
            check(
                ["a1", "a2", "a3", "a4"]
                    .iter()
                    .all(|id| api.server(id)["state"] == "serving"),
                || "not all of a1..a4 serving".into(),
            )?;
            check(
                api.borrowed().is_empty() && api.loans["counts"]["returned"] == 2,
                || "the loans are not both returned".into(),
            )
        },
    );
    let audit = script.command("`leasehold audit`", is_audit);
    op.run_reader(&audit, Fit::Whole);
    let servers = script.command("`leasehold status` with the servers", is_status);
    op.run_reader(&servers, Fit::Whole);
    script.done();

    let plain = walk_securing(&mut op, securing, &gateway_a);
    walk_maintenance(&mut op, admin, day, maintenance, &gateway_a, &plain);
    let restart_script = walk_datacenters(&mut op, datacenters);
    walk_backups(&mut op, admin, backups, &gateway_a);
    walk_what_if(&mut op, what_if);
    walk_alerts(&mut op, alerts);
    walk_status(&mut op, admin, status_section);
    walk_audit(&mut op, audit_section);

    // The federation stops; `scripts/restart-gateway.sh` starts its own on the same ports.
    op.background.clear();
    if let Err(error) = wait_for("the configs' ports to be free again", WAIT, || {
        let taken = taken_ports(&op);
        check(taken.is_empty(), || format!("taken: {taken:?}"))
    }) {
        panic!("{error}");
    }
    walk_restart_script(&mut op, &restart_script);

    eprintln!("ran, in order:");
    for line in &op.ran {
        eprintln!("  $ {line}");
    }
    eprintln!("skipped:");
    for (line, why) in &op.skipped {
        eprintln!("  $ {line}\n    ({why})");
    }
    drop(op);
    let left = leasehold_processes("");
    assert!(left.is_empty(), "processes of the walk still run: {left:?}");
    eprintln!("the walk took {:?}", started.elapsed());
}

/// "Maintenance": drain a1 and give it back, with a token of role `write` made and
/// configured as "Securing the admin address" says.
fn walk_maintenance(
    op: &mut Operator,
    admin: SocketAddr,
    day: &str,
    maintenance: &str,
    gateway_a: &DocCommand,
    plain: &str,
) {
    let mut script = Script::of(maintenance);
    // "with a token of role `write` in `ops.token`"; "A token per person or program"
    // (`leasehold token add --file admin-tokens --name NAME --role ROLE > NAME.token`) and
    // "3. The config: [admin] tokens = "admin-tokens"". A restart takes the file's path.
    quote(maintenance, "with a token of role `write` in `ops.token`");
    let made =
        op.shell("leasehold token add --file admin-tokens --name ops --role write > ops.token");
    assert!(made.ok, "cannot make a write token:\n{}", made.context());
    // The doc's commands here take the default `--gateway`, plain HTTP: site-a's [admin] as
    // before "Securing the admin address", with the token file.
    let config = plain.to_owned();
    let secured = config.replacen(
        "anonymous_role = \"read\"\n",
        "anonymous_role = \"read\"\ntokens = \"admin-tokens\"\n",
        1,
    );
    assert_ne!(
        secured, config,
        "site-a.toml's [admin] has no anonymous_role line"
    );
    op.write("site-a.toml", &secured);
    terminate("gateway run --config site-a.toml", 1);
    let log = op.start(gateway_a);
    quote(
        day,
        "The restarted gateway owns its accounts again within a second",
    );
    wait_until_or_show(
        "site-a back, owning its accounts on its own servers",
        admin,
        Some(&log),
        |api| {
            check(
                api.accounts
                    .iter()
                    .all(|a| a["owner"] == "site-a" && a["servers"] == a["min_servers"])
                    && api.count_in("serving") == 4
                    && api.borrowed().is_empty(),
                || "not every account owned at its minimum on site-a's own servers".into(),
            )
        },
    );

    let drain = script.command("`leasehold server drain`", |l| l.contains("server drain"));
    op.run(&drain, Fit::Whole);
    // "once a replacement serves, it drains": site-a has no free server of its own (shop
    // at its minimum of 3 and blog at 1 take all four), so the replacement is borrowed.
    quote(maintenance, "once a replacement serves, it drains");
    let drained = drain
        .line
        .split_whitespace()
        .nth(3)
        .expect("`leasehold server drain ID`")
        .to_owned();
    wait_until("the drained server in maintenance", admin, |api| {
        let server = api.server(&drained);
        check(server["state"] == "maintenance", || {
            format!("{drained} is {}, not drained yet", server["state"])
        })
    });
    let status = script.command("`leasehold status`", is_status);
    // The doc's example is a site of two servers and one account, as its prose says: its
    // headings and table header must be printed, and a row for each of its servers, the
    // drained one's in the state the doc shows.
    quote(maintenance, "What a site of two servers and one account");
    let printed = op.shell(&status.line);
    show(&status.line, &printed.stdout);
    assert!(
        printed.ok,
        "`{}` failed:\n{}",
        status.line,
        printed.context()
    );
    if let Err(error) = rows_present(&status.line, &status.shown, &printed.stdout) {
        panic!("{error}");
    }
    let state_of = |text: &str| -> Option<String> {
        text.lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|cells| cells.first() == Some(&drained.as_str()))
            .and_then(|cells| cells.get(1).map(|cell| cell.to_string()))
    };
    let shown_state = state_of(&status.shown.join("\n"));
    assert!(
        shown_state.is_some(),
        "the doc's status shows no row for {drained}"
    );
    assert_eq!(
        state_of(&printed.stdout),
        shown_state,
        "`{}`: {drained}'s state",
        status.line
    );
    op.ran.push(status.line.clone());
    let undrain = script.command("`leasehold server undrain`", |l| {
        l.contains("server undrain")
    });
    op.run(&undrain, Fit::Whole);
    script.done();
}

/// `config` with `min_servers = from` of account `account` as `to`.
fn raise_min_servers(config: &str, account: &str, from: u32, to: u32) -> String {
    let start = config
        .find(&format!("name = \"{account}\""))
        .unwrap_or_else(|| panic!("site-a.toml has no account {account}"));
    let old = format!("min_servers = {from}");
    let at = start
        + config[start..]
            .find(&old)
            .unwrap_or_else(|| panic!("account {account} has no `{old}`"));
    format!(
        "{}min_servers = {to}{}",
        &config[..at],
        &config[at + old.len()..]
    )
}

/// The number in `config` of `key = N` of account `account`.
fn account_number(config: &str, account: &str, key: &str) -> u32 {
    let start = config
        .find(&format!("name = \"{account}\""))
        .unwrap_or_else(|| panic!("site-a.toml has no account {account}"));
    config[start..]
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key} = ")))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("account {account} has no `{key} = N`"))
}

// ---------------------------------------------------------------------------------------
// The other sections that give commands.

const SECURING: &str = "## Securing the admin address";
const MAINTENANCE: &str = "## Maintenance";
const DATACENTERS: &str = "## Three datacenters, end to end";
const BACKUPS: &str = "## Backups";
const WHAT_IF: &str = "## Before an edit: what would it have done?";
const ALERTS: &str = "## Alerts";
const STATUS: &str = "## `leasehold status`";
const AUDIT: &str = "## `leasehold audit`";
/// Every section whose `$ ` lines the walk runs.
const WALKED: [&str; 9] = [
    "## An operator's day",
    SECURING,
    MAINTENANCE,
    DATACENTERS,
    BACKUPS,
    WHAT_IF,
    ALERTS,
    STATUS,
    AUDIT,
];

/// The value of `flag` in a command line (`--state DIR`).
fn flag_value<'a>(line: &'a str, flag: &str) -> &'a str {
    let mut words = line.split_whitespace();
    words
        .find(|word| *word == flag)
        .and_then(|_| words.next())
        .unwrap_or_else(|| panic!("`{line}` has no `{flag} VALUE`"))
}

/// `config` with its `[admin]` table (up to the next blank line) as the doc's `block`.
fn with_admin(config: &str, block: &[String]) -> String {
    // The block is indented under its list item.
    let block: Vec<String> = block.iter().map(|line| line.trim().to_owned()).collect();
    assert_eq!(
        block.first().map(String::as_str),
        Some("[admin]"),
        "the doc's config block is not an [admin] table: {block:?}"
    );
    let start = config
        .find("[admin]\n")
        .expect("site-a.toml has an [admin]");
    let end = start
        + config[start..]
            .find("\n\n")
            .expect("site-a.toml's [admin] ends with a blank line");
    format!("{}{}{}", &config[..start], block.join("\n"), &config[end..])
}

/// Waits until the log `log` holds each of the doc's `shown` lines, from its level on (the
/// doc leaves out the time), numbers masked.
fn log_has_lines(what: &str, log: &Path, shown: &[String]) {
    let wanted: Vec<String> = shown
        .iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| masked(line))
        .collect();
    let result = wait_for(what, WAIT, || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|want| {
                let level = want.split_whitespace().next().unwrap_or_default();
                !text.lines().any(|line| {
                    line.find(&format!(" {level} "))
                        .is_some_and(|at| masked(&line[at..]) == **want)
                })
            })
            .collect();
        check(missing.is_empty(), || {
            format!("no log line like {missing:?}:\n{text}")
        })
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// "Securing the admin address": site-a's admin address on HTTPS with tokens, made and
/// configured with the doc's commands and its `[admin]` block, and what a client sees.
/// Returns site-a's config as it was before (plain HTTP), which "Maintenance" goes on from.
fn walk_securing(op: &mut Operator, securing: &str, gateway_a: &DocCommand) -> String {
    let mut script = Script::of(securing);
    // 1. "An HTTPS certificate for the names and addresses clients use"
    let cert = script.command("`leasehold certs issue ... --admin`", |l| {
        l.contains("certs issue") && l.contains("--admin")
    });
    op.run(&cert, Fit::Whole);
    // 2. "A token per person or program": two added, listed, and the file as it is.
    for who in ["prometheus", "alice"] {
        let add = script.command(&format!("`leasehold token add` of {who}"), |l| {
            l.starts_with("leasehold token add")
        });
        op.run(&add, Fit::Whole);
    }
    let list = script.command("`leasehold token list`", |l| {
        l.starts_with("leasehold token list")
    });
    op.run(&list, Fit::Whole);
    let cat = script.command("`cat` of the token file", |l| l.starts_with("cat "));
    op.run(&cat, Fit::Whole);
    quote(securing, "The file is created with mode 0600");
    let tokens = flag_value(&list.line, "--file");
    let mode = std::fs::metadata(op.file(tokens))
        .unwrap_or_else(|error| panic!("cannot stat {tokens}: {error}"))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{tokens} has mode {:o}", mode & 0o777);

    // 3. "The config:", read "at start only": a restart.
    quote(securing, "3. The config:");
    let admin = script.output("the config's [admin] table");
    let plain = op.read("site-a.toml");
    op.write("site-a.toml", &with_admin(&plain, &admin));
    quote(
        securing,
        "The certificate, the file's path and the access log are read at start only",
    );
    terminate("gateway run --config site-a.toml", 1);
    let log = op.start(gateway_a);
    quote(
        securing,
        "At start the gateway says how its admin address is secured:",
    );
    let said = script.output("the gateway's line on its admin address");
    log_has_lines("the gateway's line on its admin address", &log, &said);
    show(&gateway_a.line, &said.join("\n"));

    // "What a client sees": the readers retry until the gateway answers.
    let anonymous = script.command("`curl` without a token", |l| {
        l.starts_with("curl") && !l.contains("Authorization")
    });
    op.run_reader(&anonymous, Fit::Whole);
    let metrics = script.command("`curl` with the `metrics` token", |l| {
        l.starts_with("curl") && l.contains("Authorization")
    });
    op.run_reader(&metrics, Fit::Whole);
    let refused = script.command("`leasehold status` over HTTPS without a token", |l| {
        is_status(l) && !l.contains("--token-file")
    });
    op.run_refused(&refused, Fit::Whole);
    let read = script.command("`leasehold status` with a `read` token", |l| {
        is_status(l) && l.contains("--token-file")
    });
    op.run_reader(&read, Fit::Whole);
    // Prometheus' scrape configuration: tests/admin_security.rs runs a Prometheus with it.
    quote(
        securing,
        "tests/admin_security.rs runs a real Prometheus server",
    );
    script.output("the scrape configuration");
    script.done();
    plain
}

/// "Three datacenters, end to end": `leasehold --version` runs here; the restart script
/// starts a federation of its own on the configs' ports, so it is returned, to run once
/// the walk's federation is stopped. The other blocks are for other machines.
fn walk_datacenters(op: &mut Operator, datacenters: &str) -> DocCommand {
    let mut script = Script::commands_of(datacenters);
    let version = script.command("`leasehold --version`", |l| l == "leasehold --version");
    op.run(&version, Fit::Whole);
    let restart = script.command("`scripts/restart-gateway.sh`", |l| {
        l.starts_with("scripts/restart-gateway.sh")
    });
    script.done();
    restart
}

/// `scripts/restart-gateway.sh BINARY`, run where the doc runs it, a checkout: the scratch
/// folder with the script, configs/ and the binary at the path the line gives.
fn walk_restart_script(op: &mut Operator, restart: &DocCommand) {
    let script = restart
        .line
        .split_whitespace()
        .next()
        .expect("a script's path");
    op.copy_in(&repo().join(script), script);
    for site in ["site-a", "site-b", "site-c"] {
        let config = format!("configs/{site}.toml");
        op.copy_in(&repo().join(&config), &config);
    }
    let binary = op.file(restart.line.split_whitespace().nth(1).expect("a binary"));
    std::fs::create_dir_all(binary.parent().expect("a folder")).expect("make target/debug");
    std::os::unix::fs::symlink(BINARY, &binary).expect("link the binary where the doc has it");
    op.run(restart, Fit::Whole);
}

/// "Backups": a backup from the running site-a with the `write` token, verified, and
/// restored into its state directory with the gateway stopped; then the gateway started.
/// "Before an edit": the shipped trace and its site in the scratch folder's `traces/`, the
/// copy edited as the prose says, the two replayed side by side. The replay is
/// deterministic, so the doc's figures are this build's.
fn walk_what_if(op: &mut Operator, what_if: &str) {
    for file in ["traces/azure-site.toml", "traces/azure-v2-1day.jsonl"] {
        op.copy_in(&repo().join(file), file);
    }
    let mut script = Script::commands_of(what_if);
    let copy = script.command("the copy of the site", |l| l.starts_with("cp "));
    op.run(&copy, Fit::Whole);
    quote(what_if, "raise wiki's `min_servers` from 1 to 3");
    let edited = op.file("traces/azure-site-new.toml");
    let text = std::fs::read_to_string(&edited).expect("read the copy");
    let wiki = "name = \"wiki\"\nmin_servers = 1\n";
    assert!(
        text.contains(wiki),
        "wiki's minimum is not 1 in the shipped site"
    );
    std::fs::write(
        &edited,
        text.replace(wiki, "name = \"wiki\"\nmin_servers = 3\n"),
    )
    .expect("edit the copy");
    let compare = script.command("`leasehold replay --against`", |l| {
        l.contains("replay") && l.contains("--against")
    });
    script.done();
    let printed = op.run(&compare, Fit::Whole);
    // The figures too: the same trace, the same configs, the same decisions.
    for line in &compare.shown {
        assert!(
            printed.stdout.contains(line.trim_end()),
            "the replay printed otherwise than the doc:\n{line}\n--- printed\n{}",
            printed.stdout
        );
    }
}

fn walk_backups(op: &mut Operator, admin: SocketAddr, backups: &str, gateway_a: &DocCommand) {
    let mut script = Script::commands_of(backups);
    let backup = script.command("`leasehold journal backup`", |l| {
        l.contains("journal backup")
    });
    op.run(&backup, Fit::Whole);
    let verify = script.command("`leasehold journal verify`", |l| {
        l.contains("journal verify")
    });
    op.run(&verify, Fit::Whole);

    quote(
        backups,
        "**Restore**, with the gateway stopped, into its state directory",
    );
    let restore = script.command("`leasehold journal restore`", |l| {
        l.contains("journal restore")
    });
    script.done();
    terminate("gateway run --config site-a.toml", 1);
    // "paths shortened": the doc's state directory is the one site-a's gateway runs on.
    quote(backups, "paths shortened");
    let doc_state = op.file(flag_value(&restore.line, "--state"));
    let state = op.file(flag_value(&gateway_a.line, "--state"));
    // The gateway has exited; its lock on the journal goes with the last of it, which a
    // loaded machine may take a moment over (CI once saw the restore refused as "in use").
    let free = wait_for("site-a's journal to be free", WAIT, || {
        leasehold_site_gateway::journal::Journal::open_existing(&state)
            .map(drop)
            .map_err(|error| error.to_string())
    });
    if let Err(error) = free {
        panic!("{error}");
    }
    std::fs::rename(&state, &doc_state).expect("name site-a's state directory as the doc does");
    op.run(&restore, Fit::Whole);
    std::fs::rename(&doc_state, &state).expect("give site-a's state directory its name back");
    quote(backups, "is renamed aside (`--replace`), never deleted");
    let aside = std::fs::read_dir(&state)
        .expect("read site-a's state directory")
        .filter_map(Result::ok)
        .any(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("journal.redb.before-restore-")
        });
    assert!(aside, "the journal that was there was not renamed aside");

    quote(backups, "Then start the gateway.");
    op.start(gateway_a);
    quote(
        backups,
        "The audit record `journal_restored` gives the floor",
    );
    wait_until(
        "site-a restored: its accounts owned at their minimum, `journal_restored` audited",
        admin,
        |api| {
            let audit = get_json(admin, "/v1/audit?limit=1000")?;
            check(
                audit
                    .as_array()
                    .is_some_and(|records| records.iter().any(|r| r["kind"] == "journal_restored")),
                || "no journal_restored record".into(),
            )?;
            check(
                api.accounts
                    .iter()
                    .all(|a| a["owner"] == "site-a" && a["servers"] == a["min_servers"]),
                || "not every account owned at its minimum".into(),
            )
        },
    );
}

/// "Alerts": Prometheus' own tools on the repository's rules, in a `prometheus` folder.
fn walk_alerts(op: &mut Operator, alerts: &str) {
    let mut script = Script::commands_of(alerts);
    let check = script.command("`promtool check rules ... test rules`", |l| {
        l.contains("promtool")
    });
    script.done();
    let folder = flag_value(&check.line, "cd").to_owned();
    for file in std::fs::read_dir(repo().join(&folder)).expect("read the repository's rules") {
        let name = file.expect("a rules file").file_name();
        let name = name.to_string_lossy();
        op.copy_in(
            &repo().join(&folder).join(&*name),
            &format!("{folder}/{name}"),
        );
    }
    let missing = op.missing_tools(&check.line);
    if missing.is_empty() {
        op.run(&check, Fit::Whole);
    } else {
        op.skip(
            &check,
            &format!(
                "{} not installed here (.ci/run installs Debian's prometheus before the \
                 tests, so CI runs this line)",
                missing.join(", ")
            ),
        );
    }
}

/// "`leasehold status`": the demo's burst (shop wanting six, its `max_servers`), made here
/// by raising shop's minimum to six: a second in, `--json` shows shop below its SLA; once
/// it serves six, three borrowed, the status has the doc's layout. Then a gateway that is
/// not there.
fn walk_status(op: &mut Operator, admin: SocketAddr, status: &str) {
    let mut script = Script::commands_of(status);
    let whole = script.command("`leasehold status`", |l| l == "leasehold status");
    let json = script.command("`leasehold status --json | jq`", |l| l.contains("--json"));
    let nowhere = script.command("`leasehold status` of no gateway", |l| {
        l.contains("--gateway")
    });
    script.done();

    quote(
        status,
        "in the third phase of the demo's schedule (\"shop burst: 6 wanted",
    );
    let config = op.read("site-a.toml");
    let max = account_number(&config, "shop", "max_servers");
    let min = account_number(&config, "shop", "min_servers");
    op.write("site-a.toml", &raise_min_servers(&config, "shop", min, max));
    quote(
        status,
        "a second into the burst, when shop had three of the six servers it wanted",
    );
    op.run_reader(&json, Fit::Whole);
    quote(status, "Above, shop serves six: its three at site-a");
    wait_until("shop serving six, three of them borrowed", admin, |api| {
        let serving = api
            .borrowed()
            .iter()
            .filter(|l| l["state"] == "serving")
            .count();
        check(
            api.account("shop")["servers"].as_u64() == Some(u64::from(max)) && serving == 3,
            || "shop is not serving six with three borrowed".into(),
        )
    });
    quote(
        status,
        "The output below is real: site-a of `configs/` under `leasehold demo`",
    );
    op.run_reader(&whole, Fit::OtherRun);

    quote(status, "When no gateway answers, both commands exit 1");
    let url = flag_value(&nowhere.line, "--gateway");
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|error| panic!("`{url}`: {error}"));
    assert!(
        TcpListener::bind(addr).is_ok(),
        "something listens on {addr}, where the doc has no gateway"
    );
    let printed = op.run_refused(&nowhere, Fit::Whole);
    assert_eq!(
        printed.code,
        Some(1),
        "`{}`:\n{}",
        nowhere.line,
        printed.context()
    );
}

/// "`leasehold audit`": the doc's example is from the demo run of "`leasehold status`"; here
/// the same command prints as many records, in the same layout.
fn walk_audit(op: &mut Operator, audit: &str) {
    let mut script = Script::commands_of(audit);
    let newest = script.command("`leasehold audit --limit N`", is_audit);
    script.done();
    quote(audit, "The example is from the demo run above");
    let printed = op.run_reader(&newest, Fit::OtherRun);
    let records = |text: &str| {
        text.lines()
            .filter(|line| shape(line) == Shape::Records)
            .count()
    };
    assert_eq!(
        records(&printed.stdout),
        records(&newest.shown.join("\n")),
        "`{}` printed another number of records than the doc shows",
        newest.line
    );
}
