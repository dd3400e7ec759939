//! `Codec`: protobuf over gRPC like tonic's own prost codec, except that a message that cannot
//! be decoded (malformed bytes, or a string field such as a path that is not UTF-8) is
//! `INVALID_ARGUMENT` naming the cause, not `INTERNAL`: the request was bad, the member is fine.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{Codec as GrpcCodec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstEncoder};

/// The codec every generated service and client uses.
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec {
            _types: PhantomData,
        }
    }
}

impl<T, U> GrpcCodec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CheckedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckedDecoder {
            _types: PhantomData,
        }
    }
}

/// Decodes `U`; a failure is `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct CheckedDecoder<U> {
    _types: PhantomData<U>,
}

impl<U: Message + Default> Decoder for CheckedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|error| {
            Status::invalid_argument(format!(
                "the message cannot be decoded ({error}); string fields such as paths must be \
                 valid UTF-8"
            ))
        })
    }
}
