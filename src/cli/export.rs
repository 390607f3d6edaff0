//! `tidings export`: the command-line consumer of `GET /api/audit/export`.
//!
//! Signs in, asks `GET /api/audit/count` for the total (for the progress bar), then streams
//! the export as NDJSON with `trailer=true`, read by the shared [`ExportLines`] (which the
//! import job reads with too). Every row is checked (valid JSON, ids strictly ascending) and written to
//! the output as NDJSON or CSV. The export is complete only when the trailer arrives and
//! agrees with what was received; a connection that drops (an error, a cut transfer, or an
//! end without trailer) is resumed by itself with `after=<last id>` and the remaining
//! `limit`, with jittered backoff, so the output has no gap and no duplicate.
//!
//! Tests: `tests/it/export_cli.rs` cuts the connection mid-export and checks the file.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{backoff, http_client, login, refusal, retryable, Connection};
use crate::protocol::{
    csv::{csv_record, CSV_HEADER},
    export_read::{ExportLines, Judged},
    ndjson::DEFAULT_MAX_LINE,
    ExportCount, ExportQuery,
};

/// What the output file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutFormat {
    Ndjson,
    Csv,
}

/// `tidings export`: stream the audit log to a file, verified, resuming after drops.
#[derive(Clone, Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// Where to write the rows: a file, or `-` for standard output.
    #[arg(long, short, default_value = "-")]
    pub out: String,
    /// The output's format (the stream is always NDJSON, so it can be verified).
    #[arg(long, value_enum, default_value = "ndjson")]
    pub format: OutFormat,
    /// Start after this row id.
    #[arg(long, default_value_t = 0)]
    pub after: i64,
    /// At most this many rows.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Rows per database page on the server (1–10000).
    #[arg(long)]
    pub batch: Option<u32>,
    /// Only these actions (comma-separated).
    #[arg(long)]
    pub action: Option<String>,
    /// Only this user's rows.
    #[arg(long)]
    pub user: Option<String>,
    /// Only rows at or after this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    pub since: Option<String>,
    /// Only rows before this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    pub until: Option<String>,
    /// Server pause after each flush, in ms (to watch a slow export).
    #[arg(long)]
    pub delay_ms: Option<u32>,
    /// Give up after this many attempts in a row without progress.
    #[arg(long, default_value_t = 10)]
    pub retries: u32,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// What an export run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub rows: u64,
    pub bytes: u64,
    pub last_id: i64,
    pub resumes: u32,
}

/// How one response ended.
enum Ended {
    /// The trailer arrived and agreed.
    Complete,
    /// The connection dropped (or ended without a trailer): resume.
    Dropped(String),
}

/// Runs the export; the summary line goes to standard error.
pub async fn run(args: ExportArgs) -> anyhow::Result<Summary> {
    let out: Box<dyn Write> = if args.out == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&args.out)
                .with_context(|| format!("cannot create {}", args.out))?,
        )
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let client = http_client(Duration::from_secs(30))?;
    login(&client, &args.conn).await?;

    let mut query = ExportQuery {
        after: args.after,
        limit: args.limit,
        batch: args.batch,
        delay_ms: args.delay_ms,
        action: args.action.clone(),
        user: args.user.clone(),
        since: args.since.clone(),
        until: args.until.clone(),
        trailer: true,
        ..Default::default()
    };
    let total = count(&client, &args.conn, &query).await?;
    let bar = progress_bar(total, args.quiet);
    if args.format == OutFormat::Csv {
        out.write_all(CSV_HEADER)?;
    }

    let started = Instant::now();
    let mut summary = Summary {
        last_id: args.after,
        ..Default::default()
    };
    let mut failures = 0;
    loop {
        query.after = summary.last_id;
        query.limit = args.limit.map(|l| l - summary.rows.min(l));
        let before = summary.rows;
        match fetch(&client, &args, &query, &mut out, &mut summary, &bar).await? {
            Ended::Complete => break,
            Ended::Dropped(why) => {
                if summary.rows > before {
                    failures = 0;
                }
                failures += 1;
                if failures > args.retries {
                    out.flush()?;
                    anyhow::bail!(
                        "gave up after {} attempts without progress ({why}); the output holds \
                         rows up to id {}: rerun with --after {} to continue",
                        args.retries,
                        summary.last_id,
                        summary.last_id
                    );
                }
                let wait = backoff(
                    failures,
                    Duration::from_millis(250),
                    Duration::from_secs(10),
                );
                bar.suspend(|| {
                    eprintln!(
                        "connection dropped after id {} ({why}); resuming in {:.1} s (attempt {failures}/{})",
                        summary.last_id,
                        wait.as_secs_f64(),
                        args.retries
                    )
                });
                summary.resumes += 1;
                tokio::time::sleep(wait).await;
            }
        }
    }
    out.flush()?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "exported {} rows ({:.1} MB) in {secs:.2} s: {:.0} rows/s, {:.1} MB/s; resumed {} times; \
         ids ascending and trailer verified; last id {}",
        summary.rows,
        summary.bytes as f64 / 1e6,
        summary.rows as f64 / secs,
        summary.bytes as f64 / 1e6 / secs,
        summary.resumes,
        summary.last_id
    );
    Ok(summary)
}

/// The total for the progress bar (`None` if the server would not say).
async fn count(
    client: &reqwest::Client,
    conn: &Connection,
    query: &ExportQuery,
) -> anyhow::Result<Option<u64>> {
    let url = conn.url(&format!(
        "/api/audit/count?{}",
        query.for_count().to_query_string()
    ));
    let res = client.get(url).send().await?;
    if res.status().is_client_error() {
        anyhow::bail!("the server refused the export: {}", refusal(res).await);
    }
    Ok(match res.error_for_status() {
        Ok(res) => res.json::<ExportCount>().await.ok().map(|c| c.count),
        Err(_) => None,
    })
}

fn progress_bar(total: Option<u64>, quiet: bool) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "exporting [{bar:40}] {human_pos}/{human_len} rows, {per_sec}, {eta} left",
            )
            .expect("a valid template"),
        ),
        None => ProgressBar::new_spinner(),
    };
    if quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// One request: streams its rows into `out` until the trailer or a drop.
async fn fetch(
    client: &reqwest::Client,
    args: &ExportArgs,
    query: &ExportQuery,
    out: &mut impl Write,
    summary: &mut Summary,
    bar: &ProgressBar,
) -> anyhow::Result<Ended> {
    let url = args
        .conn
        .url(&format!("/api/audit/export?{}", query.to_query_string()));
    let mut res = match client.get(url).send().await {
        Ok(res) => res,
        Err(e) => return Ok(Ended::Dropped(format!("cannot connect: {e}"))),
    };
    let status = res.status();
    if !status.is_success() {
        let why = refusal(res).await;
        if retryable(status.as_u16()) {
            return Ok(Ended::Dropped(why));
        }
        anyhow::bail!("the server refused the export: {why}");
    }
    let mut lines = ExportLines::new(summary.last_id, DEFAULT_MAX_LINE);
    let mut record = Vec::with_capacity(512);
    loop {
        let chunk = match res.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => {
                return Ok(Ended::Dropped(
                    "the stream ended without its trailer".into(),
                ))
            }
            Err(e) => return Ok(Ended::Dropped(format!("the stream broke: {e}"))),
        };
        let before = summary.rows;
        for line in lines.push(&chunk) {
            let line = line.map_err(|e| anyhow::anyhow!("the export is corrupt: {e}"))?;
            match lines.judge(&line.text) {
                Judged::Row(row) => {
                    match args.format {
                        OutFormat::Ndjson => {
                            out.write_all(line.text.as_bytes())?;
                            out.write_all(b"\n")?;
                        }
                        OutFormat::Csv => {
                            record.clear();
                            csv_record(
                                &mut record,
                                row.id,
                                &row.at,
                                &row.action,
                                &row.user,
                                row.detail.get(),
                            );
                            out.write_all(&record)?;
                        }
                    }
                    lines.keep(row.id);
                    summary.last_id = row.id;
                    summary.rows += 1;
                    summary.bytes += line.text.len() as u64 + 1;
                }
                Judged::OutOfOrder { id, last_id } => {
                    anyhow::bail!("the export is corrupt: id {id} came after id {last_id}")
                }
                Judged::Trailer { trailer: t, agrees } => {
                    if !agrees {
                        anyhow::bail!(
                            "the trailer says {} rows up to id {}, but {} rows up to id {} arrived",
                            t.rows,
                            t.last_id,
                            lines.kept(),
                            lines.last_id()
                        );
                    }
                    bar.inc(summary.rows - before);
                    return Ok(Ended::Complete);
                }
                Judged::NotARow(e) => anyhow::bail!(
                    "the export is corrupt: line {} is not a row: {e}",
                    line.number
                ),
            }
        }
        bar.inc(summary.rows - before);
    }
}
