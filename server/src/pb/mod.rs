//! Conversions between wire types (`coord_proto::v1`) and the namespace's types (`fsm`), one
//! file per wire type family. Conversions from the wire reject unknown enum values and missing
//! fields with `FsmError::InvalidArgument`, naming the field.

mod impl_command;
mod impl_event;
mod impl_output;
mod impl_stat;

pub use impl_command::{
    command_from_create, command_from_delete, command_from_set, command_from_txn, with_write_id,
};
pub use impl_event::event_to_pb;
pub use impl_output::{created_response, txn_results};
pub use impl_stat::stat_to_pb;
