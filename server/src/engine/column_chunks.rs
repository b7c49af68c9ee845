//! Held columns cut into compact chunks of [`CHUNK_ROWS`] rows.
//!
//! A slice of a whole-column array keeps the whole column's buffers alive,
//! and Arrow sizes an array by the buffers it references: every operator
//! that reserves memory by batch size (sorts, repartitions, the Flight
//! encoder that cuts messages by it) saw each 8,192-row slice of a held
//! column as the whole column. Sorts spilled at once, and `SELECT *` from
//! held columns went out in thousands of tiny messages. Chunks own their
//! buffers, so a chunk's size is its size, and a scan sends them as they
//! are, without copying. View arrays (`Utf8View`, `BinaryView`) are
//! compacted too: the decoder's views point into whole pages.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, MutableArrayData, make_array};
use arrow::datatypes::DataType;
use arrow::error::ArrowError;

/// Rows per held chunk (DataFusion's default batch size).
pub(crate) const CHUNK_ROWS: usize = 8192;

/// A held column: its chunks, in order.
pub(crate) type Chunks = Arc<Vec<ArrayRef>>;

/// `parts` (consecutive pieces of one column) as chunks of [`CHUNK_ROWS`]
/// rows (the last one shorter), each owning only the bytes of its rows.
/// Fails when a chunk's offsets would overflow their type.
pub(crate) fn chunked(parts: &[ArrayRef]) -> Result<Vec<ArrayRef>, ArrowError> {
    let data: Vec<_> = parts
        .iter()
        .filter(|part| !part.is_empty())
        .map(|part| part.to_data())
        .collect();
    let mut chunks = Vec::new();
    let (mut part, mut offset) = (0, 0);
    while part < data.len() {
        // The parts this chunk takes rows from, and how many of each.
        let mut pieces = Vec::new();
        let mut wanted = CHUNK_ROWS;
        while wanted > 0 && part < data.len() {
            let taken = wanted.min(data[part].len() - offset);
            pieces.push((part, offset, taken));
            wanted -= taken;
            offset += taken;
            if offset == data[part].len() {
                part += 1;
                offset = 0;
            }
        }
        let first = pieces[0].0;
        let sources: Vec<_> = data[first..=pieces[pieces.len() - 1].0].iter().collect();
        let rows = CHUNK_ROWS - wanted;
        let mut chunk = MutableArrayData::new(sources, false, rows);
        for (source, start, length) in pieces {
            chunk.try_extend(source - first, start, start + length)?;
        }
        chunks.push(compacted(make_array(chunk.freeze())));
    }
    Ok(chunks)
}

/// `array` with the bytes of view types copied out of the buffers they
/// share (copying a view array copies only its views).
fn compacted(array: ArrayRef) -> ArrayRef {
    match array.data_type() {
        DataType::Utf8View => Arc::new(array.as_string_view().gc()),
        DataType::BinaryView => Arc::new(array.as_binary_view().gc()),
        _ => array,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringViewArray};
    use arrow::compute::concat;

    fn strings(from: usize, to: usize) -> ArrayRef {
        Arc::new(StringViewArray::from_iter_values((from..to).map(|i| {
            format!("a string longer than twelve bytes, number {i}")
        })))
    }

    #[test]
    fn chunks_hold_the_same_values_cut_at_chunk_boundaries() {
        let parts = [strings(0, 5000), strings(5000, 5000), strings(5000, 20000)];
        let chunks = chunked(&parts).unwrap();
        let lengths: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(
            lengths,
            vec![CHUNK_ROWS, CHUNK_ROWS, 20000 - 2 * CHUNK_ROWS]
        );
        let whole = concat(&parts.iter().map(|p| p.as_ref()).collect::<Vec<_>>()).unwrap();
        let again = concat(&chunks.iter().map(|c| c.as_ref()).collect::<Vec<_>>()).unwrap();
        assert_eq!(whole.as_string_view(), again.as_string_view());
        assert!(chunked(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_chunk_owns_only_its_own_rows_bytes() {
        let whole = strings(0, 100_000);
        let chunks = chunked(std::slice::from_ref(&whole)).unwrap();
        let per_chunk = whole.get_array_memory_size() / chunks.len();
        for chunk in &chunks {
            // A slice would report the whole column.
            assert!(whole.slice(0, CHUNK_ROWS).get_array_memory_size() > 10 * per_chunk);
            assert!(
                chunk.get_array_memory_size() < 2 * per_chunk,
                "{}",
                chunk.get_array_memory_size()
            );
        }
        let numbers: ArrayRef = Arc::new(Int64Array::from_iter_values(0..100_000));
        let chunks = chunked(&[numbers.slice(10, 99_990)]).unwrap();
        assert_eq!(
            chunks[0]
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            10
        );
        assert_eq!(chunks[0].get_buffer_memory_size(), CHUNK_ROWS * 8);
    }
}
