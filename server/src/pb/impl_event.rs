//! `fsm::WatchEvent` → `coord.v1.Event`.

use coord_proto::v1 as pb;

use super::impl_stat::stat_to_pb;
use crate::fsm::{DeleteReason, EventKind, WatchEvent};

/// The wire form of `event`; its data only `with_data`.
pub fn event_to_pb(event: WatchEvent, with_data: bool) -> pb::Event {
    let (kind, delete_reason) = match event.kind {
        EventKind::Created => (pb::EventKind::Created, pb::DeleteReason::Unspecified),
        EventKind::DataChanged => (pb::EventKind::DataChanged, pb::DeleteReason::Unspecified),
        EventKind::ChildrenChanged => (
            pb::EventKind::ChildrenChanged,
            pb::DeleteReason::Unspecified,
        ),
        EventKind::Deleted(reason) => (
            pb::EventKind::Deleted,
            match reason {
                DeleteReason::Deleted => pb::DeleteReason::Deleted,
                DeleteReason::SessionClosed => pb::DeleteReason::SessionClosed,
                DeleteReason::SessionExpired => pb::DeleteReason::SessionExpired,
                DeleteReason::ContainerEmpty => pb::DeleteReason::ContainerEmpty,
            },
        ),
    };
    pb::Event {
        kind: kind as i32,
        path: event.path.to_string(),
        revision: event.revision.0,
        stat: Some(stat_to_pb(&event.stat)),
        data: if with_data { event.data } else { Vec::new() },
        delete_reason: delete_reason as i32,
    }
}
