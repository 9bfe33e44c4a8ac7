//! Health and load probes of a running workload: HTTP GETs (ureq, in the blocking pool,
//! ~1 s timeouts) and the metric-line arithmetic.

use std::time::Duration;

use crate::clock::{MonoTime, mono_now};
use crate::driver::os;

const GET_TIMEOUT: Duration = Duration::from_secs(1);
const HEALTH_POLL: Duration = Duration::from_millis(50);
/// Without a health path, a workload alive this long counts as healthy.
const ALIVE_IS_HEALTHY: Duration = Duration::from_millis(200);

/// A blocking GET; the body of a 2xx answer, or why not.
fn get(url: &str) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(GET_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|error| error.to_string())?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    response
        .body_mut()
        .read_to_string()
        .map_err(|error| error.to_string())
}

async fn get_async(url: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || get(&url))
        .await
        .unwrap_or_else(|error| Err(format!("probe task failed: {error}")))
}

/// Polls `url` until it answers 2xx, for at most `timeout`; without a URL, waits until the
/// workload has been alive a moment. The caller drops this if the workload goes away.
pub async fn wait_healthy(url: Option<String>, timeout: Duration) -> Result<(), String> {
    let Some(url) = url else {
        tokio::time::sleep(ALIVE_IS_HEALTHY).await;
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match get_async(url.clone()).await {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        if tokio::time::Instant::now() + HEALTH_POLL > deadline {
            return Err(format!(
                "{url} did not answer 2xx within {} ms (last: {last})",
                timeout.as_millis()
            ));
        }
        tokio::time::sleep(HEALTH_POLL).await;
    }
}

/// The sum of every sample of `metric` in Prometheus text, with or without labels;
/// `None` if there is none.
pub fn sum_metric(text: &str, metric: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or(line.len());
        if &line[..name_end] != metric {
            continue;
        }
        let rest = &line[name_end..];
        let rest = match rest.strip_prefix('{') {
            Some(labels) => labels.rsplit_once('}').map_or("", |(_, after)| after),
            None => rest,
        };
        if let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

/// The workload's own load metric, read from its metrics URL.
pub async fn metric_load(url: String, metric: String) -> Option<f64> {
    match get_async(url.clone()).await {
        Ok(text) => sum_metric(&text, &metric),
        Err(error) => {
            tracing::debug!(%url, %error, "load sample failed");
            None
        }
    }
}

/// One CPU-time reading of a process, for the next sample's difference.
#[derive(Debug, Clone, Copy)]
pub struct CpuReading {
    pub pid: u32,
    pub ticks: u64,
    pub at: MonoTime,
}

/// Reads the CPU time of `pid` and, given the previous reading, its CPU share in cores.
pub async fn cpu_load(pid: u32, previous: Option<CpuReading>) -> (Option<f64>, Option<CpuReading>) {
    let ticks = tokio::task::spawn_blocking(move || os::cpu_ticks(pid))
        .await
        .ok()
        .flatten();
    let Some(ticks) = ticks else {
        return (None, None);
    };
    let now = CpuReading {
        pid,
        ticks,
        at: mono_now(),
    };
    let share = previous.filter(|p| p.pid == pid).and_then(|p| {
        let wall = now.at.since(p.at).as_secs_f64();
        (wall > 0.0).then(|| (ticks.saturating_sub(p.ticks) as f64 / os::ticks_per_second()) / wall)
    });
    (share, Some(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_samples_of_exactly_the_named_metric() {
        let text = "# HELP load the load\n# TYPE load gauge\nload 2.5\nload{shard=\"a b}\"} 1.5\nload_total 100\nloader 7\n";
        assert_eq!(sum_metric(text, "load"), Some(4.0));
        assert_eq!(sum_metric(text, "load_total"), Some(100.0));
        assert_eq!(sum_metric(text, "missing"), None);
        assert_eq!(sum_metric("load NaN-ish\n", "load"), None);
    }
}
