//! Task monitors: a BMC that answers an action with 202 and a `Location` does the work in
//! the background; the monitor answers 202 while it runs and the result (or the `Task`) when
//! it is done.

use std::time::{Duration, Instant};

use crate::Error;
use crate::transport::{Method, Transport};

/// Follows the monitor at `location` until its task ends, or `timeout`.
pub(crate) fn follow(
    transport: &mut Transport,
    location: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let started = Instant::now();
    loop {
        let reply = transport.request(Method::Get, location, None, None)?;
        let state = reply.body["TaskState"].as_str().map(str::to_owned);
        let last = match (reply.status, state.as_deref()) {
            // Still running: the monitor says so with 202, or a Task that has not ended.
            (202, _) | (200, Some("New" | "Starting" | "Running" | "Pending" | "Suspended")) => {
                format!(
                    "{} {}",
                    reply.status,
                    state.as_deref().unwrap_or("(no TaskState)")
                )
            }
            (200, Some("Completed")) => {
                let status = reply.body["TaskStatus"].as_str().unwrap_or("OK");
                if status == "Critical" {
                    return Err(failed(transport, location, "Completed/Critical", &reply));
                }
                return Ok(());
            }
            (200, Some(state @ ("Exception" | "Killed" | "Cancelled" | "Interrupted"))) => {
                return Err(failed(transport, location, state, &reply));
            }
            // The action's own answer, or a monitor the BMC has already removed because the
            // task is done (some BMCs keep monitors only seconds): the caller reads back
            // what the action was for, so a gone monitor needs no guess here.
            (200 | 204 | 404, _) => return Ok(()),
            (status, _) => {
                return Err(Error::Refused {
                    url: transport.url().to_owned(),
                    method: "GET",
                    status,
                    message: format!("task monitor {location}: {}", reply.message()),
                });
            }
        };
        if started.elapsed() >= timeout {
            return Err(Error::Timeout {
                url: transport.url().to_owned(),
                what: format!("task {location} to end"),
                waited: timeout,
                last,
            });
        }
        let wait = reply
            .retry_after
            .unwrap_or(Duration::from_millis(500))
            .min(Duration::from_secs(5));
        std::thread::sleep(wait);
    }
}

fn failed(
    transport: &Transport,
    location: &str,
    state: &str,
    reply: &crate::transport::Reply,
) -> Error {
    let messages: Vec<String> = reply.body["Messages"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .filter_map(|message| message["Message"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Error::TaskFailed {
        url: transport.url().to_owned(),
        task: location.to_owned(),
        state: state.to_owned(),
        message: if messages.is_empty() {
            "(no message)".to_owned()
        } else {
            messages.join("; ")
        },
    }
}
