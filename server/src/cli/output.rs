//! Printing results for a person (tables) or a program (CSV, JSON lines),
//! and writing them to Arrow IPC or Parquet files.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use tarn_client::QueryResult;

/// How `tarn sql` prints results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table sized to the terminal.
    Table,
    /// CSV with a header row.
    Csv,
    /// JSON, one object per row.
    Json,
}

/// The longest a table cell is shown; longer values are cut with "…".
const MAX_CELL_CHARS: usize = 60;

/// Something that consumes a result batch by batch.
trait Sink {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), String>;
    fn finish(self: Box<Self>, total_rows: u64) -> Result<(), String>;
}

/// Streams `result` into the chosen output; returns the row count.
pub async fn emit(
    result: QueryResult,
    format: OutputFormat,
    file: Option<&Path>,
    max_rows: usize,
) -> Result<u64, String> {
    let schema = result.schema();
    let mut sink: Box<dyn Sink> = match file {
        Some(path) => file_sink(path, schema.clone())?,
        None => match format {
            OutputFormat::Table => Box::new(TableSink::new(schema.clone(), max_rows)),
            OutputFormat::Csv => Box::new(CsvSink(arrow::csv::Writer::new(std::io::stdout()))),
            OutputFormat::Json => Box::new(JsonSink(arrow::json::LineDelimitedWriter::new(
                std::io::stdout(),
            ))),
        },
    };
    let mut rows = 0_u64;
    let mut stream = result.into_stream();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| e.to_string())?;
        rows += batch.num_rows() as u64;
        sink.write(&batch)?;
    }
    sink.finish(rows)?;
    Ok(rows)
}

fn file_sink(path: &Path, schema: SchemaRef) -> Result<Box<dyn Sink>, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let create =
        || File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()));
    let arrow_err = |e: ArrowError| e.to_string();
    Ok(match ext.as_str() {
        "parquet" => Box::new(ParquetSink(
            ArrowWriter::try_new(create()?, schema, None).map_err(|e| e.to_string())?,
        )),
        "arrow" | "arrows" | "ipc" | "feather" => Box::new(IpcSink(
            arrow::ipc::writer::FileWriter::try_new(create()?, &schema).map_err(arrow_err)?,
        )),
        "csv" => Box::new(CsvSink(arrow::csv::Writer::new(create()?))),
        "json" | "jsonl" | "ndjson" => {
            Box::new(JsonSink(arrow::json::LineDelimitedWriter::new(create()?)))
        }
        _ => {
            return Err(format!(
                "cannot tell the format of {}: name it .parquet, .arrow, .csv or .json",
                path.display()
            ));
        }
    })
}

struct ParquetSink(ArrowWriter<File>);
impl Sink for ParquetSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        self.0.write(batch).map_err(|e| e.to_string())
    }
    fn finish(self: Box<Self>, _: u64) -> Result<(), String> {
        self.0.close().map(|_| ()).map_err(|e| e.to_string())
    }
}

struct IpcSink(arrow::ipc::writer::FileWriter<File>);
impl Sink for IpcSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        self.0.write(batch).map_err(|e| e.to_string())
    }
    fn finish(mut self: Box<Self>, _: u64) -> Result<(), String> {
        self.0.finish().map_err(|e| e.to_string())
    }
}

struct CsvSink<W: Write>(arrow::csv::Writer<W>);
impl<W: Write> Sink for CsvSink<W> {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        self.0.write(batch).map_err(|e| e.to_string())
    }
    fn finish(self: Box<Self>, _: u64) -> Result<(), String> {
        let mut inner = self.0.into_inner();
        inner.flush().map_err(|e| e.to_string())
    }
}

struct JsonSink<W: Write>(arrow::json::LineDelimitedWriter<W>);
impl<W: Write> Sink for JsonSink<W> {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        self.0.write(batch).map_err(|e| e.to_string())
    }
    fn finish(mut self: Box<Self>, _: u64) -> Result<(), String> {
        self.0.finish().map_err(|e| e.to_string())
    }
}

/// Keeps the first `max_rows` rows for display and only counts the rest, so
/// a huge result never sits in memory.
struct TableSink {
    schema: SchemaRef,
    max_rows: usize,
    rows: Vec<Vec<String>>,
}

impl TableSink {
    fn new(schema: SchemaRef, max_rows: usize) -> Self {
        Self {
            schema,
            max_rows,
            rows: Vec::new(),
        }
    }
}

impl Sink for TableSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let room = self
            .max_rows
            .saturating_sub(self.rows.len())
            .min(batch.num_rows());
        if room == 0 {
            return Ok(());
        }
        let options = FormatOptions::default().with_null("NULL");
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        for row in 0..room {
            self.rows.push(
                formatters
                    .iter()
                    .map(|f| truncate(f.value(row).to_string()))
                    .collect(),
            );
        }
        Ok(())
    }

    fn finish(self: Box<Self>, total_rows: u64) -> Result<(), String> {
        if self.schema.fields().is_empty() {
            return Ok(());
        }
        let mut table = Table::new();
        table
            .load_preset(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(self.schema.fields().iter().map(|f| f.name().as_str()));
        for row in self.rows.iter() {
            table.add_row(row);
        }
        println!("{table}");
        let shown = self.rows.len() as u64;
        if total_rows > shown {
            println!(
                "({} more rows not shown; raise --max-rows or use --format csv)",
                total_rows - shown
            );
        }
        Ok(())
    }
}

fn truncate(value: String) -> String {
    if value.chars().count() <= MAX_CELL_CHARS {
        return value;
    }
    let mut cut: String = value.chars().take(MAX_CELL_CHARS - 1).collect();
    cut.push('…');
    cut
}
