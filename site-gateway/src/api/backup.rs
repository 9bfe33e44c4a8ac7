//! `GET /v1/journal/backup`: the journal's backup (`crate::journal::write_backup`), written
//! on a blocking thread from a snapshot while the gateway goes on writing, and streamed to
//! the client through a bounded channel, so that a backup of any size costs a few chunks of
//! memory and a slow client slows only its own backup.

use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use tokio::sync::mpsc;

use super::{Api, error, unavailable};
use crate::actors::journal::Snapshot;

/// Bytes per chunk sent to the client.
const CHUNK: usize = 64 * 1024;
/// Chunks written ahead of the client.
const CHUNKS_AHEAD: usize = 8;

/// Where the backup writes: whole chunks into the channel, waiting while it is full.
struct ChannelWriter {
    buffer: Vec<u8>,
    sender: mpsc::Sender<Result<web::Bytes, std::io::Error>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= CHUNK {
            self.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = web::Bytes::from(std::mem::take(&mut self.buffer));
        self.sender.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client went away before the backup was whole",
            )
        })
    }
}

/// The response body: the chunks as they come. An error ends the response early; the
/// client sees a backup without its closing line, which every reader refuses.
struct ChannelBody {
    receiver: mpsc::Receiver<Result<web::Bytes, std::io::Error>>,
}

impl MessageBody for ChannelBody {
    type Error = std::io::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<web::Bytes, Self::Error>>> {
        self.get_mut().receiver.poll_recv(cx)
    }
}

/// The journal's file, whose name errors carry, and the boot key beside it.
#[derive(Clone)]
pub(super) struct StateFiles {
    pub journal: PathBuf,
    pub boot_key: PathBuf,
}

pub(super) async fn backup(api: web::Data<Api>) -> HttpResponse {
    let snapshot = match api.journal.send(Snapshot).await {
        Ok(Ok(snapshot)) => snapshot,
        Ok(Err(failed)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the journal: {failed}"),
            );
        }
        Err(_) => return unavailable(),
    };
    let files = api.files.clone();
    let site = api.site.clone();
    let (sender, receiver) = mpsc::channel(CHUNKS_AHEAD);
    let wall_ms = crate::actors::wall_ms();
    actix_web::rt::task::spawn_blocking(move || {
        let boot_key = std::fs::read(&files.boot_key).ok();
        let mut out = ChannelWriter {
            buffer: Vec::with_capacity(CHUNK),
            sender: sender.clone(),
        };
        let written = crate::journal::write_backup(
            &snapshot,
            &files.journal,
            boot_key.as_deref(),
            wall_ms,
            &mut out,
        );
        match written {
            Ok(summary) => tracing::info!(
                records = summary.records,
                bytes = summary.bytes,
                sha256 = %summary.sha256,
                "journal backup sent"
            ),
            Err(failed) => {
                tracing::warn!(error = %failed, "journal backup not completed");
                let _ = sender.blocking_send(Err(std::io::Error::other(failed.to_string())));
            }
        }
    });
    HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{site}-journal-{wall_ms}.jsonl\""),
        ))
        .body(ChannelBody { receiver })
}
