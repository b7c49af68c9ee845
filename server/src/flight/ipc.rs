//! Parameter rows sent with DoPut: IPC messages checked against their own
//! headers before arrow decodes them.

use arrow::array::RecordBatch;
use arrow_flight::FlightData;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use futures::{FutureExt, TryStreamExt};
use tonic::Status;

use super::service::BoxedStream;
use super::status::malformed;

/// Decodes the record batches of a DoPut stream (parameter rows).
///
/// Each message is checked against its own header before arrow decodes it
/// (arrow's decoder panics on a body shorter than its header says), and
/// decoding runs inside a panic boundary, so no byte a client sends can
/// panic a thread that serves the network.
pub(super) async fn decode_batches(
    data: BoxedStream<FlightData>,
) -> Result<Vec<RecordBatch>, Status> {
    // Messages that only carry the descriptor have no IPC header to decode.
    let data = data
        .try_filter(|d| futures::future::ready(!d.data_header.is_empty()))
        .and_then(|message| {
            let checked = ipc_body_fits(&message)
                .map(|()| message)
                .map_err(|why| malformed("parameter batches", why));
            futures::future::ready(checked)
        })
        .map_err(FlightError::from);
    let decoding = FlightRecordBatchStream::new_from_flight_data(data).try_collect::<Vec<_>>();
    match std::panic::AssertUnwindSafe(decoding).catch_unwind().await {
        Ok(Ok(batches)) => Ok(batches),
        Ok(Err(e)) => Err(malformed("parameter batches", Status::from(e).message())),
        Err(_) => Err(malformed(
            "parameter batches",
            "the IPC data does not match its header",
        )),
    }
}

/// Checks that every buffer an IPC message's header describes lies inside
/// the message's body.
fn ipc_body_fits(message: &FlightData) -> Result<(), String> {
    use arrow::ipc::MessageHeader;
    let header = arrow::ipc::root_as_message(&message.data_header)
        .map_err(|e| format!("the IPC header does not parse ({e})"))?;
    let body = message.data_body.len();
    let announced = usize::try_from(header.bodyLength()).unwrap_or(usize::MAX);
    if announced > body {
        return Err(format!(
            "the body is {body} bytes, but its header announces {announced}"
        ));
    }
    let buffers = match header.header_type() {
        MessageHeader::RecordBatch => header.header_as_record_batch().and_then(|b| b.buffers()),
        MessageHeader::DictionaryBatch => header
            .header_as_dictionary_batch()
            .and_then(|d| d.data())
            .and_then(|b| b.buffers()),
        _ => None,
    };
    for (i, buffer) in buffers.iter().flat_map(|b| b.iter()).enumerate() {
        let end = usize::try_from(buffer.offset())
            .ok()
            .zip(usize::try_from(buffer.length()).ok())
            .and_then(|(offset, length)| offset.checked_add(length));
        if end.is_none_or(|end| end > body) {
            return Err(format!(
                "buffer {i} (offset {}, length {}) lies outside the {body}-byte body",
                buffer.offset(),
                buffer.length()
            ));
        }
    }
    Ok(())
}
