//! Sinks that collect one drain of a Session or a Server.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use hummer_channel::client::{self, Event, TransportAction};

/// What one `Session::drain` produced. `room`: how many more frames the
/// "transport" takes (`None`: any number); at 0, `writable()` is false.
#[derive(Debug, Default)]
pub struct SessionOut {
    pub actions: Vec<TransportAction>,
    pub frames: Vec<Bytes>,
    pub events: Vec<Event>,
    pub room: Option<usize>,
}

impl SessionOut {
    /// A sink that takes at most `n` frames.
    pub fn with_room(n: usize) -> SessionOut {
        SessionOut {
            room: Some(n),
            ..SessionOut::default()
        }
    }
}

impl client::Sink for SessionOut {
    fn transport(&mut self, action: TransportAction) {
        self.actions.push(action);
    }
    fn writable(&mut self) -> bool {
        self.room != Some(0)
    }
    fn transmit(&mut self, frame: Bytes) {
        if let Some(room) = &mut self.room {
            *room = room
                .checked_sub(1)
                .expect("a frame past writable() == false");
        }
        self.frames.push(frame);
    }
    fn event(&mut self, event: Event) {
        self.events.push(event);
    }
}

#[cfg(feature = "server")]
pub use server_out::ServerOut;

#[cfg(feature = "server")]
mod server_out {
    use super::*;
    use hummer_channel::server::{self, CloseReason, ConnId, TransportAction};

    /// What one `Server::drain` produced, in order. A connection in `held`
    /// takes no frame; one in `room` takes that many more.
    #[derive(Debug, Default)]
    pub struct ServerOut {
        pub frames: Vec<(ConnId, Bytes)>,
        pub closes: Vec<(ConnId, CloseReason)>,
        pub held: HashSet<ConnId>,
        pub room: HashMap<ConnId, usize>,
    }

    impl server::Sink for ServerOut {
        fn writable(&mut self, conn: ConnId) -> bool {
            !self.held.contains(&conn) && self.room.get(&conn) != Some(&0)
        }
        fn transmit(&mut self, conn: ConnId, frame: Bytes) {
            assert!(
                !self.held.contains(&conn),
                "a frame for {conn:?} past writable() == false"
            );
            if let Some(room) = self.room.get_mut(&conn) {
                *room = room
                    .checked_sub(1)
                    .expect("a frame past writable() == false");
            }
            self.frames.push((conn, frame));
        }
        fn transport(&mut self, action: TransportAction) {
            let TransportAction::Close { conn, reason } = action;
            self.closes.push((conn, reason));
        }
    }
}
