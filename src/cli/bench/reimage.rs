//! `leasehold bench reimage`: the control plane's own time in the moves of machines, apart
//! from the boot itself. A site of emulated machines (the sushy-tools Redfish emulator, the
//! harness playing their firmware, as `tests/machines.rs` runs them) and a gateway of this
//! build; every move flips all machines from one account to the other. Each re-image is
//! timed from the evidence three processes leave on one clock (CLOCK_MONOTONIC): the
//! gateway's audit records, the BMC's log of the requests that change a machine, and the
//! booted node agent's event log.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use leasehold_chaos_tests::harness::bmc::emulator_available;
use leasehold_chaos_tests::harness::evidence::node_events;
use leasehold_chaos_tests::harness::interrupt;
use leasehold_chaos_tests::harness::machine_site::{MachineSite, MachineSpec, SiteOptions};
use leasehold_chaos_tests::harness::onesite::{FAST_TIMINGS, account};
use leasehold_chaos_tests::harness::site::AccountSpec;
use leasehold_chaos_tests::harness::wait_for;
use leasehold_node::event_log::EventKind;
use serde_json::{Value, json};

/// A move waits this long for every machine to serve its new account (power changes in
/// the emulator take 1 to 11 s each).
const MOVE_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, clap::Args)]
pub struct ReimageArgs {
    /// Emulated machines in the site; every move re-images all of them at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=32))]
    machines: u8,
    /// Moves to time; each moves every machine to the other account.
    #[arg(long, default_value_t = 5)]
    moves: u32,
    /// Where the site's files go (must be new or empty) [default: a temporary dir, removed
    /// at the end].
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,
}

/// One re-image, on the monotonic clock (ns).
#[derive(Debug, Clone)]
struct Sample {
    server: String,
    epoch: u64,
    /// The arbiter's decision to move the server (`reclaim`).
    decided: u64,
    /// The re-image decided and journaled (`reimage`), once the old workload had stopped.
    reimage: u64,
    /// The first request to the machine's system, whatever it asks, as the BMC got it.
    contact: u64,
    /// The first request that changes the machine (power off), as the BMC got it.
    first_bmc: u64,
    /// The last one before the boot (power on).
    last_bmc: u64,
    /// The node agent of the new image registered with the boot's claim (`booted`).
    registered: u64,
    /// The node accepted the pointer (its event log).
    accepted: u64,
    /// The workload passed its health check (its event log).
    healthy: u64,
}

pub fn run(args: &ReimageArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.moves > 0, "--moves must be at least 1");
    emulator_available().map_err(|error| {
        anyhow::anyhow!("{error}\nInstall it with: python3 -m pip install sushy-tools==2.2.0")
    })?;
    interrupt::watch("leasehold bench reimage").map_err(anyhow::Error::msg)?;
    let binary = std::env::current_exe().context("cannot find the leasehold binary itself")?;
    let (dir, _temporary) = super::work_dir(args.work.as_deref())?;
    let n = u32::from(args.machines);
    eprintln!(
        "bench reimage: {n} emulated machines, {} moves of all of them, on {} cores; files in {}",
        args.moves,
        std::thread::available_parallelism().map_or(0, |cores| cores.get()),
        dir.display()
    );
    let specs: Vec<MachineSpec> = (1..=n)
        .map(|i| MachineSpec::new(&format!("m{i}")))
        .collect();
    let options = SiteOptions {
        timings: FAST_TIMINGS
            .iter()
            .map(|(key, value)| (key.to_string(), *value))
            .chain([("machine_power_timeout_ms".to_owned(), 60_000)])
            .collect(),
        ..SiteOptions::default()
    };
    let site = MachineSite::start_with(&binary, &dir, &specs, &accounts(n, "shop"), &options)
        .map_err(anyhow::Error::msg)?;
    wait_all(&site, &specs, "shop", "the first boots")?;
    for step in 1..=args.moves {
        let to = if step % 2 == 1 { "blog" } else { "shop" };
        site.write_config(&accounts(n, to))
            .map_err(anyhow::Error::msg)?;
        wait_all(&site, &specs, to, &format!("move {step}/{}", args.moves))?;
    }
    let samples = collect(&site)?;
    let expected = (n * args.moves) as usize;
    if samples.len() != expected {
        bail!(
            "found {} timed moves in the evidence, expected {expected}; the files are in {}",
            samples.len(),
            dir.display()
        );
    }
    print_table(&samples);
    println!("{}", summary(args, &samples));
    if args.work.is_none() {
        drop(site);
    }
    Ok(ExitCode::SUCCESS)
}

/// Every machine for `to`, and none for the other account: the move re-images all.
fn accounts(machines: u32, to: &str) -> Vec<AccountSpec> {
    let (shop, blog) = if to == "shop" {
        ((machines, 20), (0, 10))
    } else {
        ((0, 10), (machines, 20))
    };
    vec![
        account("shop", shop.0, machines, shop.1),
        account("blog", blog.0, machines, blog.1),
    ]
}

fn wait_all(site: &MachineSite, specs: &[MachineSpec], to: &str, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut shown = usize::MAX;
    wait_for(
        &format!("{what}: every machine to serve {to}"),
        MOVE_TIMEOUT,
        || {
            let mut serving = 0;
            for spec in specs {
                let entry = site.server(&spec.id)?;
                if entry["state"] == "serving" && entry["account"] == to {
                    serving += 1;
                }
            }
            if serving != shown {
                eprintln!(
                    "  {what}: {serving} of {} machines serve {to} ({:.1} s)",
                    specs.len(),
                    started.elapsed().as_secs_f64()
                );
                shown = serving;
            }
            if serving == specs.len() {
                Ok(())
            } else {
                Err(format!("{serving} of {} serve {to}", specs.len()))
            }
        },
    )
    .map_err(|error| anyhow::anyhow!("{error}\n{}", site.output()))
}

/// Every move's re-image, timed from the evidence.
fn collect(site: &MachineSite) -> anyhow::Result<Vec<Sample>> {
    let audit = site.audit().map_err(anyhow::Error::msg)?;
    let stats = site.bmc.stats().map_err(anyhow::Error::msg)?;
    let changes = stats["stats"]["changes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let arrivals = &stats["stats"]["arrivals"];
    let mut samples = Vec::new();
    // The BMC names each machine by its system's UUID.
    for (spec, fake) in &site.machines {
        let (server, uuid) = (spec.id.as_str(), fake.uuid.as_str());
        let records: Vec<&Value> = audit.iter().filter(|r| r["server"] == server).collect();
        let bmc: Vec<u64> = changes
            .iter()
            .filter(|change| change["system"] == uuid)
            .filter_map(|change| change["mono_ns"].as_u64())
            .collect();
        let contacts: Vec<u64> = arrivals[uuid]
            .as_array()
            .map(|list| list.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let boots = site.player.boots(server);
        for (index, record) in records.iter().enumerate() {
            if record["kind"] != "reimage" {
                continue;
            }
            // Only moves: the first boots took free machines, no decision to drain.
            let Some(decided) = records[..index]
                .iter()
                .rev()
                .find(|r| r["kind"] == "reclaim")
                .and_then(|r| r["mono_ns"].as_u64())
            else {
                continue;
            };
            let (Some(reimage), Some(epoch)) =
                (record["mono_ns"].as_u64(), record["epoch"].as_u64())
            else {
                bail!("a reimage record without mono_ns or epoch: {record}");
            };
            let registered = records[index..]
                .iter()
                .find(|r| r["kind"] == "booted" && r["epoch"].as_u64() == Some(epoch))
                .and_then(|r| r["mono_ns"].as_u64())
                .with_context(|| format!("{server} e{epoch}: no booted record"))?;
            let to_machine: Vec<u64> = bmc
                .iter()
                .copied()
                .filter(|at| (reimage..registered).contains(at))
                .collect();
            let (Some(&first_bmc), Some(&last_bmc)) = (to_machine.first(), to_machine.last())
            else {
                bail!("{server} e{epoch}: the BMC got no request between re-image and boot");
            };
            let contact = contacts
                .iter()
                .copied()
                .find(|at| (reimage..=first_bmc).contains(at))
                .unwrap_or(first_bmc);
            let boot = boots
                .iter()
                .find(|boot| {
                    let wanted = format!("leasehold.epoch={epoch}");
                    boot.cmdline.split_whitespace().any(|word| word == wanted)
                })
                .with_context(|| format!("{server} e{epoch}: no boot of that epoch"))?;
            let events = node_events(&boot.work).map_err(anyhow::Error::msg)?;
            let at = |wanted: fn(&EventKind) -> bool| {
                events
                    .iter()
                    .find(|event| wanted(&event.kind))
                    .map(|event| event.mono_ns)
                    .with_context(|| format!("{server} e{epoch}: {}", boot.work.display()))
            };
            samples.push(Sample {
                server: server.to_owned(),
                epoch,
                decided,
                reimage,
                contact,
                first_bmc,
                last_bmc,
                registered,
                accepted: at(|kind| matches!(kind, EventKind::PointerAccepted { .. }))?,
                healthy: at(|kind| matches!(kind, EventKind::WorkloadHealthy { .. }))?,
            });
        }
    }
    Ok(samples)
}

fn ms(from: u64, to: u64) -> f64 {
    to.saturating_sub(from) as f64 / 1e6
}

/// The measured spans, by name, in the order of a move.
fn spans(sample: &Sample) -> [(&'static str, f64); 8] {
    [
        ("drain_and_stop", ms(sample.decided, sample.reimage)),
        ("reimage_to_bmc", ms(sample.reimage, sample.first_bmc)),
        ("reimage_to_contact", ms(sample.reimage, sample.contact)),
        ("contact_to_change", ms(sample.contact, sample.first_bmc)),
        ("power_and_boot", ms(sample.last_bmc, sample.registered)),
        (
            "registered_to_accepted",
            ms(sample.registered, sample.accepted),
        ),
        ("accepted_to_healthy", ms(sample.accepted, sample.healthy)),
        (
            "registered_to_healthy",
            ms(sample.registered, sample.healthy),
        ),
    ]
}

fn print_table(samples: &[Sample]) {
    let Some(first) = samples.first() else {
        return;
    };
    let mut header = format!("\n{:<6} {:>5}", "server", "epoch");
    for (name, _) in spans(first) {
        header.push_str(&format!(
            " {:>w$}",
            format!("{name} ms"),
            w = name.len() + 3
        ));
    }
    eprintln!("{header}");
    for sample in samples {
        let mut row = format!("{:<6} {:>5}", sample.server, sample.epoch);
        for (name, value) in spans(sample) {
            row.push_str(&format!(" {value:>w$.1}", w = name.len() + 3));
        }
        eprintln!("{row}");
    }
}

/// One JSON line: each span's percentiles over every re-image, in ms.
fn summary(args: &ReimageArgs, samples: &[Sample]) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("machines".into(), json!(args.machines));
    out.insert("moves".into(), json!(args.moves));
    out.insert("reimages".into(), json!(samples.len()));
    for (i, (name, _)) in spans(&samples[0]).iter().enumerate() {
        let mut values: Vec<f64> = samples.iter().map(|s| spans(s)[i].1).collect();
        values.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            (values[rank - 1] * 10.0).round() / 10.0
        };
        out.insert(
            format!("{name}_ms"),
            json!({"p50": pick(0.5), "p90": pick(0.9), "max": pick(1.0)}),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(base: u64) -> Sample {
        Sample {
            server: "m1".into(),
            epoch: 2,
            decided: base,
            reimage: base + 1_000_000,
            contact: base + 1_500_000,
            first_bmc: base + 3_000_000,
            last_bmc: base + 5_000_000,
            registered: base + 9_000_000,
            accepted: base + 9_500_000,
            healthy: base + 10_000_000,
        }
    }

    #[test]
    fn spans_are_the_differences_in_order() {
        let spans = spans(&sample(7));
        assert_eq!(
            spans.map(|(_, ms)| ms),
            [1.0, 2.0, 0.5, 1.5, 4.0, 0.5, 0.5, 1.0],
            "{spans:?}"
        );
    }

    #[test]
    fn percentiles_pick_ranks() {
        let args = ReimageArgs {
            machines: 1,
            moves: 4,
            work: None,
        };
        let mut samples: Vec<Sample> = (0..4).map(|_| sample(0)).collect();
        samples[3].reimage = 0; // drain 0 ms, reimage→BMC 3 ms
        let line = summary(&args, &samples);
        assert_eq!(line["reimages"], 4);
        assert_eq!(line["reimage_to_bmc_ms"]["p50"], 2.0);
        assert_eq!(line["reimage_to_bmc_ms"]["max"], 3.0);
        assert_eq!(line["drain_and_stop_ms"]["p50"], 1.0);
    }
}
