//! `tarn sql`: a Flight SQL shell built on the client crate.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use arrow::array::{Array, BinaryArray, StringArray};
use arrow::ipc::convert::try_schema_from_ipc_buffer;
use clap::Args;
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use tarn_client::{Client, TableFilter};

use super::output::{OutputFormat, emit};
use super::{fail, progress, split};

/// `tarn sql`
#[derive(Debug, Args)]
#[command(
    after_help = "Meta-commands: \\d lists tables, \\d NAME describes one, \\q quits, \\? helps.\n\
Examples:\n  tarn sql -c \"SELECT count(*) FROM lineitem\"\n  tarn sql queries.sql --format csv > out.csv\n  tarn sql -c \"SELECT * FROM orders\" -o orders.parquet"
)]
pub struct SqlArgs {
    #[command(flatten)]
    pub server: super::HostArg,
    /// SQL (or a meta-command) to run; repeat for several
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    pub commands: Vec<String>,
    /// File of SQL statements separated by ';' ("-" reads standard input)
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// How to print results
    #[arg(long, short = 'f', value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// Write results to this file instead (.parquet, .arrow, .csv or .json)
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Most rows a table shows (the rest are counted, not printed)
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_rows: usize,
    /// Do not print row counts and timings
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Runs `tarn sql`.
pub fn run(args: SqlArgs) -> ExitCode {
    let server = args.server.clone();
    super::with_client(&server, move |mut client| async move {
        let mut shell = Shell {
            client: &mut client,
            args: &args,
        };
        if !args.commands.is_empty() {
            return shell.run_all(args.commands.clone()).await;
        }
        let script = match &args.file {
            Some(path) if path.as_os_str() == "-" => read_stdin(),
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
            None if !std::io::stdin().is_terminal() => read_stdin(),
            None => return shell.interactive().await,
        };
        match script {
            Ok(script) => shell.run_all(split::statements(&script)).await,
            Err(e) => fail(&e),
        }
    })
}

fn read_stdin() -> Result<String, String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    Ok(text)
}

struct Shell<'a> {
    client: &'a mut Client,
    args: &'a SqlArgs,
}

impl Shell<'_> {
    /// Runs statements in order; stops at the first failure.
    async fn run_all(&mut self, statements: Vec<String>) -> ExitCode {
        for statement in statements {
            if let Err(e) = self.run_one(&statement).await {
                return fail(&e);
            }
        }
        ExitCode::SUCCESS
    }

    async fn run_one(&mut self, input: &str) -> Result<(), String> {
        let input = input.trim().trim_end_matches(';').trim();
        if let Some(meta) = input.strip_prefix('\\') {
            return self.meta(meta).await;
        }
        let started = Instant::now();
        // The bar is for a person watching a table; never in CSV/JSON,
        // files or pipes.
        let show_bar = self.args.format == OutputFormat::Table
            && self.args.output.is_none()
            && std::io::stdout().is_terminal()
            && std::io::stderr().is_terminal();
        let (format, output, max_rows) = (
            self.args.format,
            self.args.output.as_deref(),
            self.args.max_rows,
        );
        let (returns_rows, rows) =
            progress::run(self.client, input, show_bar, |result| async move {
                let returns_rows = !result.schema().fields().is_empty();
                let rows = emit(result, format, output, max_rows).await?;
                Ok((returns_rows, rows))
            })
            .await?;
        if !self.args.quiet {
            let elapsed = started.elapsed().as_secs_f64();
            let what = if returns_rows {
                format!("{rows} row{}", if rows == 1 { "" } else { "s" })
            } else {
                "OK".to_string()
            };
            // Summaries go to stderr so that CSV/JSON on stdout stay clean;
            // flushing first keeps them after the result they describe.
            let _ = std::io::Write::flush(&mut std::io::stdout());
            eprintln!("{what} in {elapsed:.3} s");
        }
        Ok(())
    }

    async fn meta(&mut self, command: &str) -> Result<(), String> {
        let mut words = command.split_whitespace();
        match (words.next(), words.next()) {
            (Some("d"), None) => self.list_tables().await,
            (Some("d"), Some(name)) => self.describe(name).await,
            (Some("?"), _) | (Some("h"), _) => {
                println!(
                    "\\d          list tables\n\\d NAME     describe a table\n\\q          quit\nAnything else is SQL; end it with ';'."
                );
                Ok(())
            }
            _ => Err(format!(
                "unknown meta-command '\\{command}'; \\? lists them"
            )),
        }
    }

    async fn list_tables(&mut self) -> Result<(), String> {
        let result = self
            .client
            .tables(TableFilter::default())
            .await
            .map_err(|e| e.to_string())?;
        let batches = result.collect().await.map_err(|e| e.to_string())?;
        let mut table = new_table(["schema", "name", "type"]);
        for batch in &batches {
            let col = |i: usize| {
                batch
                    .column(i)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
            };
            let (Some(schema), Some(name), Some(kind)) = (col(1), col(2), col(3)) else {
                return Err("the server's GetTables answer has unexpected column types".into());
            };
            for row in 0..batch.num_rows() {
                if schema.value(row) == "information_schema" {
                    continue;
                }
                table.add_row([schema.value(row), name.value(row), kind.value(row)]);
            }
        }
        println!("{table}");
        Ok(())
    }

    async fn describe(&mut self, name: &str) -> Result<(), String> {
        let (schema_pattern, table_pattern) = match name.rsplit_once('.') {
            Some((schema, table)) => (Some(schema.to_string()), table.to_string()),
            None => (None, name.to_string()),
        };
        let filter = TableFilter {
            schema_pattern,
            table_pattern: Some(table_pattern),
            include_schema: true,
            ..Default::default()
        };
        let result = self
            .client
            .tables(filter)
            .await
            .map_err(|e| e.to_string())?;
        let batches = result.collect().await.map_err(|e| e.to_string())?;
        let Some((batch, row)) = batches
            .iter()
            .find_map(|b| (b.num_rows() > 0).then_some((b, 0)))
        else {
            return Err(format!("table '{name}' not found; \\d lists the tables"));
        };
        let schemas = batch
            .column(4)
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or("the server's GetTables answer has no schema column")?;
        let schema = try_schema_from_ipc_buffer(schemas.value(row)).map_err(|e| e.to_string())?;
        let mut table = new_table(["column", "type", "nullable"]);
        for field in schema.fields() {
            table.add_row([
                field.name().clone(),
                field.data_type().to_string(),
                if field.is_nullable() { "yes" } else { "no" }.to_string(),
            ]);
        }
        println!("{table}");
        Ok(())
    }

    async fn interactive(&mut self) -> ExitCode {
        let mut editor = match DefaultEditor::new() {
            Ok(e) => e,
            Err(e) => return fail(&format!("cannot start the line editor: {e}")),
        };
        let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".tarn_history"));
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        println!(
            "tarn sql {} connected to {}. End statements with ';', \\? for help, \\q to quit.",
            env!("CARGO_PKG_VERSION"),
            self.args.server.host
        );
        let mut buffer = String::new();
        loop {
            let prompt = if buffer.is_empty() {
                "tarn> "
            } else {
                "  ... "
            };
            match editor.readline(prompt) {
                Ok(line) => {
                    let trimmed = line.trim();
                    if buffer.is_empty()
                        && (trimmed == "\\q" || trimmed == "quit" || trimmed == "exit")
                    {
                        break;
                    }
                    if !buffer.is_empty() {
                        buffer.push('\n');
                    }
                    buffer.push_str(&line);
                    let meta = buffer.trim_start().starts_with('\\');
                    if meta || split::is_complete(&buffer) {
                        let _ = editor.add_history_entry(buffer.trim());
                        let statements = if meta {
                            vec![buffer.clone()]
                        } else {
                            split::statements(&buffer)
                        };
                        for statement in statements {
                            if let Err(e) = self.run_one(&statement).await {
                                eprintln!("error: {e}");
                            }
                        }
                        buffer.clear();
                    }
                }
                Err(ReadlineError::Interrupted) => buffer.clear(),
                Err(ReadlineError::Eof) => break,
                Err(e) => return fail(&e.to_string()),
            }
        }
        if let Some(path) = &history {
            let _ = editor.save_history(path);
        }
        ExitCode::SUCCESS
    }
}

fn new_table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    table
}
