//! The codec of every generated client and server: prost's, with smaller per-call buffers.
//!
//! tonic allocates an encode buffer for each call's messages and a decode buffer for each
//! call's answers, 8 KiB each by default. sched's calls are mostly small (a scale, a task
//! report, a Raft acknowledgement): at that size glibc takes each buffer from its general
//! bins rather than the per-thread cache, a cost paid twice per call on both ends (about a
//! percent of a server's CPU under many small writes). 1 KiB fits the per-thread cache; a
//! larger message (a snapshot, a long log) grows the buffer as before.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Bytes each call's encode and decode buffers start with.
pub const CALL_BUFFER_BYTES: usize = 1024;

/// A message this large or larger is handed on before the next is encoded (tonic's default).
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// prost encoding and decoding with [`CALL_BUFFER_BYTES`] buffers. The generated code makes
/// one per call with `default()`.
#[derive(Debug, Clone)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        SmallBufferCodec(PhantomData)
    }
}

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(CALL_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(buffer_settings())
    }
}
