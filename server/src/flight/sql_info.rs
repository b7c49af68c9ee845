//! What Tarn tells clients about itself: GetSqlInfo and GetXdbcTypeInfo.
//!
//! The JDBC driver builds `DatabaseMetaData` from SqlInfo, and ODBC clients
//! (Power BI) ask for the type table before every preview, so both answer
//! every key and every type Tarn can return.

use std::collections::HashMap;
use std::sync::LazyLock;

use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlOuterJoinsSupportLevel,
    SqlSupportedCaseSensitivity, SqlSupportedGroupBy, SqlSupportedResultSetType,
    SqlSupportedSubqueries, SqlSupportedTransaction, SqlSupportedUnions, SqlSupportsConvert,
    SqlTransactionIsolationLevel, XdbcDataType, XdbcDatetimeSubcode,
};

/// SQL keywords beyond SQL:2003 that DataFusion reserves.
const KEYWORDS: &[&str] = &[
    "ANALYZE",
    "COPY",
    "EXPLAIN",
    "EXTERNAL",
    "FORMAT",
    "LOCATION",
    "OPTIONS",
    "PARTITIONED",
    "QUALIFY",
    "SHOW",
    "STORED",
    "TABLES",
    "UNNEST",
    "VIEWS",
];
const NUMERIC_FUNCTIONS: &[&str] = &[
    "ABS", "ACOS", "ASIN", "ATAN", "ATAN2", "CBRT", "CEIL", "COS", "COT", "DEGREES", "EXP",
    "FLOOR", "GCD", "LCM", "LN", "LOG", "LOG10", "LOG2", "MOD", "PI", "POWER", "RADIANS", "RANDOM",
    "ROUND", "SIGN", "SIN", "SQRT", "TAN", "TRUNC",
];
const STRING_FUNCTIONS: &[&str] = &[
    "ASCII",
    "BIT_LENGTH",
    "BTRIM",
    "CHAR_LENGTH",
    "CHR",
    "CONCAT",
    "CONCAT_WS",
    "INITCAP",
    "LEFT",
    "LENGTH",
    "LOWER",
    "LPAD",
    "LTRIM",
    "MD5",
    "OCTET_LENGTH",
    "POSITION",
    "REGEXP_LIKE",
    "REGEXP_REPLACE",
    "REPEAT",
    "REPLACE",
    "REVERSE",
    "RIGHT",
    "RPAD",
    "RTRIM",
    "SPLIT_PART",
    "STARTS_WITH",
    "STRPOS",
    "SUBSTR",
    "SUBSTRING",
    "TRANSLATE",
    "TRIM",
    "UPPER",
];
const SYSTEM_FUNCTIONS: &[&str] = &["ARROW_TYPEOF", "COALESCE", "NULLIF", "NVL", "VERSION"];
const DATETIME_FUNCTIONS: &[&str] = &[
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "DATE_BIN",
    "DATE_PART",
    "DATE_TRUNC",
    "EXTRACT",
    "FROM_UNIXTIME",
    "MAKE_DATE",
    "NOW",
    "TO_CHAR",
    "TO_DATE",
    "TO_TIMESTAMP",
    "TO_UNIXTIME",
];

/// GetSqlInfo's answer, built once.
pub static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Tarn");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0_i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0_i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, true);
    b.append(SqlInfo::SqlDdlTable, true);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlKeywords, KEYWORDS);
    b.append(SqlInfo::SqlNumericFunctions, NUMERIC_FUNCTIONS);
    b.append(SqlInfo::SqlStringFunctions, STRING_FUNCTIONS);
    b.append(SqlInfo::SqlSystemFunctions, SYSTEM_FUNCTIONS);
    b.append(SqlInfo::SqlDatetimeFunctions, DATETIME_FUNCTIONS);
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsConvert, supports_convert());
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(
        SqlInfo::SqlSupportedGroupBy,
        bits(&[SqlSupportedGroupBy::SqlGroupByUnrelated as i32]),
    );
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    // SQL_MINIMUM_GRAMMAR | SQL_CORE_GRAMMAR
    b.append(SqlInfo::SqlSupportedGrammar, 0b11_i32);
    // ANSI92_ENTRY_SQL
    b.append(SqlInfo::SqlAnsi92SupportedLevel, 0b1_i32);
    b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    b.append(
        SqlInfo::SqlOuterJoinsSupportLevel,
        SqlOuterJoinsSupportLevel::SqlFullOuterJoins as i32,
    );
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSchemasSupportedActions, 0_i32);
    b.append(SqlInfo::SqlCatalogsSupportedActions, 0_i32);
    b.append(SqlInfo::SqlSupportedPositionedCommands, 0_i32);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(
        SqlInfo::SqlSupportedSubqueries,
        bits(&[
            SqlSupportedSubqueries::SqlSubqueriesInComparisons as i32,
            SqlSupportedSubqueries::SqlSubqueriesInExists as i32,
            SqlSupportedSubqueries::SqlSubqueriesInIns as i32,
        ]),
    );
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(
        SqlInfo::SqlSupportedUnions,
        bits(&[
            SqlSupportedUnions::SqlUnion as i32,
            SqlSupportedUnions::SqlUnionAll as i32,
        ]),
    );
    // Zero means "no limit or unknown" for every maximum below.
    for key in [
        SqlInfo::SqlMaxBinaryLiteralLength,
        SqlInfo::SqlMaxCharLiteralLength,
        SqlInfo::SqlMaxColumnNameLength,
        SqlInfo::SqlMaxColumnsInGroupBy,
        SqlInfo::SqlMaxColumnsInIndex,
        SqlInfo::SqlMaxColumnsInOrderBy,
        SqlInfo::SqlMaxColumnsInSelect,
        SqlInfo::SqlMaxColumnsInTable,
        SqlInfo::SqlMaxConnections,
        SqlInfo::SqlMaxCursorNameLength,
        SqlInfo::SqlMaxIndexLength,
        SqlInfo::SqlDbSchemaNameLength,
        SqlInfo::SqlMaxProcedureNameLength,
        SqlInfo::SqlMaxCatalogNameLength,
        SqlInfo::SqlMaxRowSize,
        SqlInfo::SqlMaxStatementLength,
        SqlInfo::SqlMaxStatements,
        SqlInfo::SqlMaxTableNameLength,
        SqlInfo::SqlMaxTablesInSelect,
        SqlInfo::SqlMaxUsernameLength,
    ] {
        b.append(key, 0_i64);
    }
    b.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, false);
    b.append(
        SqlInfo::SqlDefaultTransactionIsolation,
        SqlTransactionIsolationLevel::SqlTransactionNone as i32,
    );
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlSupportedTransactionsIsolationLevels, 0_i32);
    b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, true);
    b.append(
        SqlInfo::SqlSupportedResultSetTypes,
        bits(&[SqlSupportedResultSetType::SqlResultSetTypeForwardOnly as i32]),
    );
    for key in [
        SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified,
        SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly,
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive,
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive,
    ] {
        // SQL_RESULT_SET_CONCURRENCY_READ_ONLY
        b.append(key, 0b10_i32);
    }
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    b.build().expect("static SqlInfo values are well-typed")
});

fn bits(flags: &[i32]) -> i32 {
    flags.iter().fold(0, |acc, f| acc | (1 << f))
}

/// Which conversions `CAST` supports, per the JDBC `supportsConvert` table.
fn supports_convert() -> HashMap<i32, Vec<i32>> {
    use SqlSupportsConvert::*;
    let numeric = [
        SqlConvertBigint,
        SqlConvertInteger,
        SqlConvertSmallint,
        SqlConvertTinyint,
        SqlConvertDecimal,
        SqlConvertFloat,
        SqlConvertReal,
    ];
    let all_targets: Vec<i32> = numeric
        .iter()
        .chain([SqlConvertVarchar, SqlConvertChar, SqlConvertBit].iter())
        .map(|c| *c as i32)
        .collect();
    let mut map = HashMap::new();
    for from in numeric
        .iter()
        .chain([SqlConvertVarchar, SqlConvertChar].iter())
    {
        map.insert(*from as i32, all_targets.clone());
    }
    let temporal = vec![
        SqlConvertDate as i32,
        SqlConvertTimestamp as i32,
        SqlConvertVarchar as i32,
    ];
    map.insert(SqlConvertDate as i32, temporal.clone());
    map.insert(SqlConvertTimestamp as i32, temporal);
    map
}

/// GetXdbcTypeInfo's answer: one row per SQL type a Tarn result can hold.
pub static XDBC_TYPE_INFO: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let mut add = |name: &str,
                   data_type: XdbcDataType,
                   size: Option<i32>,
                   prefix: Option<&str>,
                   scale: Option<(i32, i32)>,
                   radix: Option<i32>,
                   subcode: Option<XdbcDatetimeSubcode>,
                   sql_type: XdbcDataType,
                   searchable: Searchable,
                   case_sensitive: bool| {
        b.append(XdbcTypeInfo {
            type_name: name.into(),
            data_type,
            column_size: size,
            literal_prefix: prefix.map(Into::into),
            literal_suffix: prefix.map(Into::into),
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive,
            searchable,
            unsigned_attribute: radix.map(|_| false),
            fixed_prec_scale: false,
            auto_increment: Some(false),
            local_type_name: Some(name.into()),
            minimum_scale: scale.map(|s| s.0),
            maximum_scale: scale.map(|s| s.1),
            sql_data_type: sql_type,
            datetime_subcode: subcode,
            num_prec_radix: radix,
            interval_precision: None,
        });
    };
    use XdbcDataType::*;
    let basic = Searchable::Basic;
    let full = Searchable::Full;
    add(
        "BOOLEAN",
        XdbcBit,
        Some(1),
        None,
        None,
        None,
        None,
        XdbcBit,
        basic,
        false,
    );
    add(
        "TINYINT",
        XdbcTinyint,
        Some(3),
        None,
        None,
        Some(10),
        None,
        XdbcTinyint,
        basic,
        false,
    );
    add(
        "SMALLINT",
        XdbcSmallint,
        Some(5),
        None,
        None,
        Some(10),
        None,
        XdbcSmallint,
        basic,
        false,
    );
    add(
        "INTEGER",
        XdbcInteger,
        Some(10),
        None,
        None,
        Some(10),
        None,
        XdbcInteger,
        basic,
        false,
    );
    add(
        "BIGINT",
        XdbcBigint,
        Some(19),
        None,
        None,
        Some(10),
        None,
        XdbcBigint,
        basic,
        false,
    );
    add(
        "REAL",
        XdbcReal,
        Some(7),
        None,
        None,
        Some(2),
        None,
        XdbcReal,
        basic,
        false,
    );
    add(
        "FLOAT",
        XdbcFloat,
        Some(15),
        None,
        None,
        Some(2),
        None,
        XdbcFloat,
        basic,
        false,
    );
    add(
        "DOUBLE",
        XdbcDouble,
        Some(15),
        None,
        None,
        Some(2),
        None,
        XdbcDouble,
        basic,
        false,
    );
    add(
        "DECIMAL",
        XdbcDecimal,
        Some(38),
        None,
        Some((0, 38)),
        Some(10),
        None,
        XdbcDecimal,
        basic,
        false,
    );
    add(
        "CHAR",
        XdbcChar,
        Some(i32::MAX),
        Some("'"),
        None,
        None,
        None,
        XdbcChar,
        full,
        true,
    );
    add(
        "VARCHAR",
        XdbcVarchar,
        Some(i32::MAX),
        Some("'"),
        None,
        None,
        None,
        XdbcVarchar,
        full,
        true,
    );
    add(
        "BINARY",
        XdbcBinary,
        Some(i32::MAX),
        None,
        None,
        None,
        None,
        XdbcBinary,
        basic,
        false,
    );
    add(
        "VARBINARY",
        XdbcVarbinary,
        Some(i32::MAX),
        None,
        None,
        None,
        None,
        XdbcVarbinary,
        basic,
        false,
    );
    add(
        "DATE",
        XdbcDate,
        Some(10),
        Some("'"),
        None,
        None,
        Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
        XdbcDatetime,
        basic,
        false,
    );
    add(
        "TIME",
        XdbcTime,
        Some(18),
        Some("'"),
        None,
        None,
        Some(XdbcDatetimeSubcode::XdbcSubcodeTime),
        XdbcDatetime,
        basic,
        false,
    );
    add(
        "TIMESTAMP",
        XdbcTimestamp,
        Some(29),
        Some("'"),
        Some((0, 9)),
        None,
        Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
        XdbcDatetime,
        basic,
        false,
    );
    add(
        "INTERVAL",
        XdbcInterval,
        None,
        Some("'"),
        None,
        None,
        None,
        XdbcInterval,
        basic,
        false,
    );
    add(
        "TIMESTAMP WITH TIME ZONE",
        XdbcTimestamp,
        Some(35),
        Some("'"),
        Some((0, 9)),
        None,
        Some(XdbcDatetimeSubcode::XdbcSubcodeTimestampWithTimezone),
        XdbcDatetime,
        basic,
        false,
    );
    // Nested types have no XDBC code: clients see them as "unknown" and read them as Arrow.
    add(
        "LIST",
        XdbcUnknownType,
        None,
        None,
        None,
        None,
        None,
        XdbcUnknownType,
        Searchable::None,
        false,
    );
    add(
        "STRUCT",
        XdbcUnknownType,
        None,
        None,
        None,
        None,
        None,
        XdbcUnknownType,
        Searchable::None,
        false,
    );
    add(
        "MAP",
        XdbcUnknownType,
        None,
        None,
        None,
        None,
        None,
        XdbcUnknownType,
        Searchable::None,
        false,
    );
    b.build().expect("static XDBC type rows are well-typed")
});
