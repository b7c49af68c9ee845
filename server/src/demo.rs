//! The demo lake: TPC-H at a small scale factor, a Hive-partitioned `sales`
//! table and an `awkward_types` table with the types BI clients trip over.
//!
//! It is generated (in pure Rust, deterministically) rather than committed, so
//! the repository stays small and any scale factor is one command away.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, Int32Array, Int64Array, ListBuilder, RecordBatch,
    StringArray, StringBuilder, StructArray, TimestampMicrosecondArray, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Fields, Schema};
use arrow::error::ArrowError;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

/// The file whose presence marks a folder as a generated demo lake.
pub const MARKER: &str = ".tarn-demo";

/// The TPC-H table names, in generation order.
pub const TPCH_TABLES: [&str; 8] = [
    "nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem",
];

/// Why the demo lake could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Writing a file failed.
    #[error("cannot write the demo lake at {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Encoding Parquet failed.
    #[error("cannot encode demo table {table}: {message}")]
    Encode {
        /// The table.
        table: String,
        /// The cause.
        message: String,
    },
}

/// Whether `root` already holds a generated demo lake.
pub fn exists(root: &Path) -> bool {
    root.join(MARKER).exists()
}

/// Writes the demo lake into `root` at TPC-H scale factor `scale`.
///
/// Files are written under temporary names and renamed into place, and the
/// marker comes last: an interrupted run leaves no half-written table behind
/// and is simply redone on the next start.
pub fn generate(root: &Path, scale: f64) -> Result<(), DemoError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| DemoError::Io { path, source }
    };
    std::fs::create_dir_all(root).map_err(io(root))?;
    for table in TPCH_TABLES {
        write_table(
            root,
            table,
            &format!("{table}.parquet"),
            tpch_batches(table, scale),
        )?;
    }
    for (relative, batch) in sales_partitions() {
        write_table(root, "sales", &relative, std::iter::once(Ok(batch)))?;
    }
    write_table(
        root,
        "awkward_types",
        "awkward_types.parquet",
        std::iter::once(awkward_types()),
    )?;
    let marker = root.join(MARKER);
    std::fs::write(&marker, format!("scale_factor = {scale}\n")).map_err(io(&marker))
}

type Batches = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>>>;

fn tpch_batches(table: &str, scale: f64) -> Batches {
    match table {
        "nation" => Box::new(NationArrow::new(NationGenerator::new(scale, 1, 1))),
        "region" => Box::new(RegionArrow::new(RegionGenerator::new(scale, 1, 1))),
        "part" => Box::new(PartArrow::new(PartGenerator::new(scale, 1, 1))),
        "supplier" => Box::new(SupplierArrow::new(SupplierGenerator::new(scale, 1, 1))),
        "partsupp" => Box::new(PartSuppArrow::new(PartSuppGenerator::new(scale, 1, 1))),
        "customer" => Box::new(CustomerArrow::new(CustomerGenerator::new(scale, 1, 1))),
        "orders" => Box::new(OrderArrow::new(OrderGenerator::new(scale, 1, 1))),
        _ => Box::new(LineItemArrow::new(LineItemGenerator::new(scale, 1, 1))),
    }
}

fn write_table(
    root: &Path,
    table: &str,
    relative: &str,
    batches: impl Iterator<Item = Result<RecordBatch, ArrowError>>,
) -> Result<(), DemoError> {
    let encode = |e: &dyn std::fmt::Display| DemoError::Encode {
        table: table.to_string(),
        message: e.to_string(),
    };
    let path = root.join(relative);
    let io = |source| DemoError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    // A leading dot keeps the half-written file out of table discovery.
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("table")
    ));
    let file = File::create(&tmp).map_err(io)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut batches = batches.peekable();
    let schema = match batches.peek() {
        Some(Ok(batch)) => batch.schema(),
        Some(Err(e)) => return Err(encode(e)),
        None => return Ok(()),
    };
    let mut writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| encode(&e))?;
    for batch in batches {
        let batch = batch.map_err(|e| encode(&e))?;
        writer.write(&batch).map_err(|e| encode(&e))?;
    }
    writer.close().map_err(|e| encode(&e))?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// `sales/region=R/year=Y/part-0.parquet`: a small, deterministic fact table.
fn sales_partitions() -> Vec<(String, RecordBatch)> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("sale_id", DataType::Int64, false),
        Field::new("product", DataType::Utf8, false),
        Field::new("quantity", DataType::Int32, false),
        Field::new("amount", DataType::Decimal128(12, 2), false),
        Field::new("sold_on", DataType::Date32, false),
    ]));
    let products = ["widget", "gadget", "gizmo", "doohickey"];
    let mut out = Vec::new();
    let mut next_id = 1_i64;
    for region in ["AMERICA", "ASIA", "EUROPE"] {
        for year in [2023_i32, 2024] {
            let rows = 50;
            let ids: Vec<i64> = (next_id..next_id + rows).collect();
            next_id += rows;
            let product: Vec<&str> = ids.iter().map(|i| products[(*i as usize) % 4]).collect();
            let quantity: Vec<i32> = ids.iter().map(|i| (i % 7 + 1) as i32).collect();
            let amount: Vec<i128> = ids.iter().map(|i| (i * 1234 % 100_000) as i128).collect();
            // Days since the epoch: 1 January of `year` plus a spread over the year.
            let jan1 = if year == 2023 { 19358 } else { 19723 };
            let sold_on: Vec<i32> = ids.iter().map(|i| jan1 + (i * 7 % 365) as i32).collect();
            let columns: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(product)),
                Arc::new(Int32Array::from(quantity)),
                Arc::new(
                    Decimal128Array::from(amount)
                        .with_precision_and_scale(12, 2)
                        .expect("12,2 is a valid decimal type"),
                ),
                Arc::new(Date32Array::from(sold_on)),
            ];
            let batch = RecordBatch::try_new(Arc::clone(&schema), columns)
                .expect("columns match the schema");
            out.push((
                format!("sales/region={region}/year={year}/part-0.parquet"),
                batch,
            ));
        }
    }
    out
}

/// One row per awkward case: nulls everywhere, time zones, decimals, nesting,
/// a string longer than a page.
fn awkward_types() -> Result<RecordBatch, ArrowError> {
    let tags_field = Arc::new(Field::new("item", DataType::Utf8, true));
    let point_fields = Fields::from(vec![
        Field::new("x", DataType::Int32, true),
        Field::new("label", DataType::Utf8, true),
    ]);
    let mut tags = ListBuilder::new(StringBuilder::new()).with_field(Arc::clone(&tags_field));
    tags.values().append_value("a");
    tags.values().append_value("b");
    tags.append(true);
    tags.append(false);
    tags.values().append_null();
    tags.append(true);
    let long = "tarn ".repeat(2000);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(vec![1, 2, 3])),
        Arc::new(TimestampMicrosecondArray::from(vec![
            Some(1_700_000_000_000_000),
            None,
            Some(0),
        ])),
        Arc::new(
            TimestampNanosecondArray::from(vec![Some(1_700_000_000_123_456_789), Some(-1), None])
                .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_700_000_000_000_000), None, Some(1)])
                .with_timezone("Europe/Paris"),
        ),
        Arc::new(
            Decimal128Array::from(vec![Some(12_345_678_901_234_567_i128), Some(-1), None])
                .with_precision_and_scale(38, 10)?,
        ),
        Arc::new(Date32Array::from(vec![Some(0), Some(-719_162), None])),
        Arc::new(StringArray::from(vec![Some(long.as_str()), Some(""), None])),
        Arc::new(tags.finish()),
        Arc::new(StructArray::try_new(
            point_fields,
            vec![
                Arc::new(Int32Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(StringArray::from(vec![Some("one"), Some("two"), None])),
            ],
            Some(vec![true, true, false].into()),
        )?),
    ];
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new(
            "ts_naive",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
            true,
        ),
        Field::new(
            "ts_utc",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, Some("UTC".into())),
            true,
        ),
        Field::new(
            "ts_paris",
            DataType::Timestamp(
                arrow::datatypes::TimeUnit::Microsecond,
                Some("Europe/Paris".into()),
            ),
            true,
        ),
        Field::new("amount", DataType::Decimal128(38, 10), true),
        Field::new("day", DataType::Date32, true),
        Field::new("note", DataType::Utf8, true),
        Field::new("tags", DataType::List(tags_field), true),
        Field::new(
            "point",
            DataType::Struct(Fields::from(vec![
                Field::new("x", DataType::Int32, true),
                Field::new("label", DataType::Utf8, true),
            ])),
            true,
        ),
    ]);
    RecordBatch::try_new(Arc::new(schema), columns)
}
