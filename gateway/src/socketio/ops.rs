//! Server-side operations across the cluster, as Node's Socket.IO names
//! them (`fetchSockets`, `socketsJoin`, `socketsLeave`, `disconnectSockets`,
//! `timeout().emitWithAck()`, and the rooms of a namespace): each asks every
//! node through the adapter and merges the answers, and
//! [`SocketIo::answer_local`] is this node's part in any of them.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::namespace::Joined;
use super::payload::{self, Payload};
use super::{OpError, Socket, SocketIo, Target};
use crate::cluster::BusError;
use crate::cluster::adapter::{ClusterError, Gathered};
use crate::cluster::message::{Answer, Op, SocketAck, SocketInfo};
use crate::config::Config;
use crate::ids::{NodeId, RoomNameError};
use crate::telemetry::ErrorChain;

/// The answers of a cluster-wide emit-with-ack.
#[derive(Debug, Default)]
pub struct AckReport {
    pub acks: Vec<SocketAck>,
    pub timed_out: Vec<String>,
    /// Nodes that did not answer.
    pub missing_nodes: Vec<NodeId>,
}

fn socket_info(s: &Socket, node_id: NodeId) -> SocketInfo {
    SocketInfo {
        id: s.id().to_owned(),
        nsp: s.namespace().name.to_string(),
        rooms: s.rooms(),
        user_id: s.user_id().map(str::to_owned),
        node_id,
        transport: s.transport().as_str().to_owned(),
        connected_at_ms: s
            .connected_at()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        data: s.data().map(|d| d.to_string()),
    }
}

/// Characters of the Engine.IO session id the Admin UI groups sockets by.
const ADMIN_CLIENT_ID_LEN: usize = 12;

/// A socket as the Admin UI shows it (what Node's `instrument` sends): its
/// id, Engine.IO connection, transport, namespace, data, handshake and rooms.
pub(crate) fn admin_socket_json(socket: &Socket, config: &Config) -> Value {
    let session = socket.session();
    let info = &session.info;
    let header = |name: &str| {
        info.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| &**v)
    };
    let headers: Map<String, Value> = info
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), Value::String(v.to_string())))
        .collect();
    let query: Map<String, Value> = form_urlencoded::parse(info.query.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    let address = header("cf-connecting-ip")
        .or_else(|| header("x-forwarded-for"))
        .map(str::to_owned)
        .unwrap_or_else(|| info.remote.ip().to_string());
    let issued = socket
        .connected_at()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut data = match socket.data() {
        Some(Value::Object(m)) => m,
        Some(other) => {
            let mut m = Map::new();
            m.insert("data".into(), other);
            m
        }
        None => Map::new(),
    };
    if let Some(user) = socket.user_id() {
        data.entry("userId").or_insert_with(|| user.into());
    }
    let sid: &str = &session.sid;
    json!({
        "id": socket.id(),
        "clientId": &sid[..sid.len().min(ADMIN_CLIENT_ID_LEN)],
        "transport": socket.transport().as_str(),
        "nsp": &*socket.namespace().name,
        "data": data,
        "handshake": {
            "address": address,
            "headers": headers,
            "query": query,
            "issued": issued,
            "secure": header("x-forwarded-proto") == Some("https"),
            "time": crate::clock::iso8601_ms(issued),
            "url": format!("{}/?{}", config.server.path.trim_end_matches('/'), info.query),
            "xdomain": header("origin").is_some(),
        },
        "rooms": socket.rooms(),
    })
}

impl SocketIo {
    async fn request(
        &self,
        nsp: &str,
        target: &Target,
        op: Op,
        timeout: Duration,
    ) -> Result<Gathered, OpError> {
        let local = self.answer_local(nsp, target, &op);
        Ok(self
            .inner
            .adapter
            .request(nsp, target.clone(), op.clone(), timeout, local)
            .await?)
    }

    /// `fetchSockets()`: the selected sockets of every node.
    pub async fn fetch_sockets(
        &self,
        nsp: &str,
        target: &Target,
    ) -> Result<(Vec<SocketInfo>, Vec<NodeId>), OpError> {
        let timeout = self.inner.adapter.request_timeout();
        let g = self.request(nsp, target, Op::FetchSockets, timeout).await?;
        let mut out = Vec::new();
        for (_, a) in g.answers {
            if let Answer::Sockets(s) = a {
                out.extend(s);
            }
        }
        Ok((out, g.missing))
    }

    /// Every socket of the cluster (at most `max`) in the Socket.IO Admin
    /// UI's shape, as JSON texts; and the nodes that did not answer.
    pub(crate) async fn fetch_admin_sockets(
        &self,
        max: u32,
    ) -> Result<(Vec<String>, Vec<NodeId>), OpError> {
        let timeout = self.inner.adapter.request_timeout();
        let op = Op::FetchAdminSockets { max };
        let g = self.request("/", &Target::default(), op, timeout).await?;
        let mut out = Vec::new();
        for (_, a) in g.answers {
            if let Answer::AdminSockets(s) = a {
                out.extend(s);
            }
        }
        out.truncate(max as usize);
        Ok((out, g.missing))
    }

    /// `socketsJoin(rooms)` on every node; returns the sockets matched.
    pub async fn join_rooms(
        &self,
        nsp: &str,
        target: &Target,
        rooms: Vec<String>,
    ) -> Result<(u64, Vec<NodeId>), OpError> {
        self.membership(nsp, target, rooms, Op::Join).await
    }

    /// `socketsLeave(rooms)` on every node; returns the sockets matched.
    pub async fn leave_rooms(
        &self,
        nsp: &str,
        target: &Target,
        rooms: Vec<String>,
    ) -> Result<(u64, Vec<NodeId>), OpError> {
        self.membership(nsp, target, rooms, Op::Leave).await
    }

    async fn membership(
        &self,
        nsp: &str,
        target: &Target,
        rooms: Vec<String>,
        op: fn(Vec<String>) -> Op,
    ) -> Result<(u64, Vec<NodeId>), OpError> {
        self.check_rooms(&rooms)?;
        let timeout = self.inner.adapter.request_timeout();
        let g = self.request(nsp, target, op(rooms), timeout).await?;
        // A node that could not confirm its part makes the call fail: its
        // sockets are not in the rooms, and the caller must hear it.
        if let Some((node, why)) = g.answers.iter().find_map(|(node, a)| match a {
            Answer::Unavailable(why) => Some((node, why)),
            _ => None,
        }) {
            let e = BusError::Peer {
                node: node.to_string(),
                reason: why.clone(),
            };
            return Err(ClusterError::Bus(e).into());
        }
        Ok((sum_counts(&g.answers), g.missing))
    }

    /// `disconnectSockets(close)` on every node; returns the sockets matched.
    pub async fn disconnect_sockets(
        &self,
        nsp: &str,
        target: &Target,
        close: bool,
    ) -> Result<(u64, Vec<NodeId>), OpError> {
        let timeout = self.inner.adapter.request_timeout();
        let g = self
            .request(nsp, target, Op::Disconnect { close }, timeout)
            .await?;
        Ok((sum_counts(&g.answers), g.missing))
    }

    /// Rooms of `nsp` with their cluster-wide member counts.
    pub async fn list_rooms(
        &self,
        nsp: &str,
    ) -> Result<(Vec<(String, u64)>, Vec<NodeId>), OpError> {
        let timeout = self.inner.adapter.request_timeout();
        let g = self
            .request(nsp, &Target::default(), Op::ListRooms, timeout)
            .await?;
        let mut merged: std::collections::BTreeMap<String, u64> = Default::default();
        for (_, a) in g.answers {
            if let Answer::Rooms(rooms) = a {
                for (name, n) in rooms {
                    *merged.entry(name).or_default() += n;
                }
            }
        }
        Ok((merged.into_iter().collect(), g.missing))
    }

    /// `timeout(ms).emitWithAck(...)` across the cluster.
    pub async fn emit_with_ack(
        &self,
        nsp: &str,
        target: &Target,
        event: &str,
        args: &Payload,
        timeout: Duration,
    ) -> Result<AckReport, OpError> {
        payload::validate(args)?;
        let op = Op::EmitWithAck {
            event: event.to_owned(),
            args: args.args.clone(),
            attachments: args.attachments.clone(),
            timeout_ms: timeout.as_millis() as u64,
        };
        // Nodes answer after their sockets' timeout: leave room for transit.
        let wait = timeout + self.inner.adapter.request_timeout();
        let g = self.request(nsp, target, op, wait).await?;
        let mut report = AckReport {
            missing_nodes: g.missing,
            ..AckReport::default()
        };
        for (_, a) in g.answers {
            if let Answer::Acks { acks, timed_out } = a {
                report.acks.extend(acks);
                report.timed_out.extend(timed_out);
            }
        }
        Ok(report)
    }

    fn check_rooms(&self, rooms: &[String]) -> Result<(), OpError> {
        let max = self.config().limits.max_room_name;
        if rooms.is_empty() {
            return Err(OpError::Invalid("no rooms given".into()));
        }
        for r in rooms {
            crate::ids::check_joinable_room(r, max).map_err(|e| {
                OpError::Invalid(match e {
                    RoomNameError::SocketIdShape => {
                        format!("room name {r:?} is reserved: it has the shape of a socket id")
                    }
                    _ => format!("room name {r:?} must be 1 to {max} bytes"),
                })
            })?;
        }
        Ok(())
    }

    /// This node's part of an operation that every node receives on its
    /// own (the Redis emitter's requests), with nobody to answer.
    pub(crate) async fn apply_local(&self, nsp: &str, target: &Target, op: &Op) {
        self.answer_local(nsp, target, op).await;
    }

    /// This node's answer to a cluster-wide operation.
    pub(super) async fn answer_local(&self, nsp: &str, target: &Target, op: &Op) -> Answer {
        let ns = self.inner.namespaces.get(nsp);
        let selected = ns.as_ref().map(|ns| ns.select(target)).unwrap_or_default();
        match op {
            Op::FetchSockets => Answer::Sockets(
                selected
                    .iter()
                    .map(|s| socket_info(s, self.node_id()))
                    .collect(),
            ),
            Op::Join(rooms) => {
                let max = self.config().limits.max_rooms_per_socket;
                let mut fresh = Vec::new();
                let mut member_rooms = std::collections::HashSet::new();
                // Sockets that joined every room (a socket at its room
                // limit is not counted).
                let mut joined = 0;
                for s in &selected {
                    let mut all = true;
                    for room in rooms {
                        match s.join(room, max) {
                            Ok(Joined::Yes { .. }) => {
                                fresh.push((s.clone(), room.clone()));
                                member_rooms.insert(room);
                            }
                            Ok(Joined::Already) => {
                                member_rooms.insert(room);
                            }
                            Err(_) => all = false,
                        }
                    }
                    joined += u64::from(all);
                }
                // Acknowledged only once this node receives every room; a
                // room it cannot confirm is undone here and reported.
                if ns.is_some() {
                    for room in member_rooms {
                        if let Err(e) = self.adapter().room_subscribed(nsp, room).await {
                            for (s, r) in &fresh {
                                if r == room {
                                    s.leave(r);
                                }
                            }
                            // Only text crosses the bus: the whole chain.
                            return Answer::Unavailable(format!(
                                "room {room:?}: {}",
                                ErrorChain(&e)
                            ));
                        }
                    }
                }
                Answer::Count(joined)
            }
            Op::Leave(rooms) => {
                for s in &selected {
                    for room in rooms {
                        s.leave(room);
                    }
                }
                Answer::Count(selected.len() as u64)
            }
            Op::Disconnect { close } => {
                for s in &selected {
                    s.disconnect(*close);
                }
                Answer::Count(selected.len() as u64)
            }
            Op::FetchAdminSockets { max } => {
                let mut out = Vec::new();
                'all: for ns in self.inner.namespaces.all() {
                    for s in ns.select(&Target::default()) {
                        if out.len() >= *max as usize {
                            break 'all;
                        }
                        out.push(admin_socket_json(&s, self.config()).to_string());
                    }
                }
                Answer::AdminSockets(out)
            }
            Op::ListRooms => Answer::Rooms(
                ns.map(|ns| {
                    ns.room_counts()
                        .into_iter()
                        .map(|(r, n)| (r, n as u64))
                        .collect()
                })
                .unwrap_or_default(),
            ),
            Op::EmitWithAck {
                event,
                args,
                attachments,
                timeout_ms,
            } => {
                let payload = Payload {
                    args: args.clone(),
                    attachments: attachments.clone(),
                };
                let timeout = Duration::from_millis(*timeout_ms);
                let waits = selected.iter().map(|s| {
                    let payload = &payload;
                    async move {
                        let r = s.emit_with_ack(event, payload, timeout).await;
                        (s.id().to_owned(), r)
                    }
                });
                let results = futures_util::future::join_all(waits).await;
                let mut acks = Vec::new();
                let mut timed_out = Vec::new();
                for (id, r) in results {
                    match r {
                        Ok(p) => acks.push(SocketAck {
                            socket_id: id,
                            args: p.args,
                            attachments: p.attachments,
                        }),
                        Err(_) => timed_out.push(id),
                    }
                }
                Answer::Acks { acks, timed_out }
            }
        }
    }
}

fn sum_counts(answers: &[(NodeId, Answer)]) -> u64 {
    answers
        .iter()
        .map(|(_, a)| match a {
            Answer::Count(n) => *n,
            _ => 0,
        })
        .sum()
}
