//! A device's sync core: its documents and one link to the server, no I/O.
//!
//! [`DeviceCore`] holds the device's documents in memory and a
//! [`PeerDocSync`] per document for the server link. The I/O layer (the
//! Rust client) loads documents from the device's own store with
//! [`DeviceCore::add_doc`], reports the link going up and down, passes
//! decoded messages in, and carries out the returned [`DeviceEffect`]s:
//! send a message, persist a chunk, tell subscribers a document changed.
//!
//! Local changes never wait for the network: [`DeviceCore::change`] applies
//! them at once, asks for them to be persisted, and sends them if the link
//! is up. When the link comes back every document resynchronises from a
//! fresh sync state, which is how offline changes reach the server.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Automerge, ChangeHash};

use crate::doc_sync::PeerDocSync;
use crate::ids::{DocumentId, PeerId, StorageId};
use crate::wire::{Message, PeerMetadata, PROTOCOL_VERSION};

/// What the I/O layer must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEffect {
    /// Send on the current connection.
    Send(Message),
    /// Append these changes to the device's store for the document.
    Persist {
        document_id: DocumentId,
        chunk: Vec<u8>,
    },
    /// The document changed (locally or from the server).
    Changed { document_id: DocumentId },
    /// The server does not have a document this device asked for.
    Unavailable { document_id: DocumentId },
    /// The server reported an error; the link will be closed by it.
    ServerError { message: String },
}

/// Where the link to the server stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Offline,
    /// `join` sent, waiting for `peer`.
    Joining,
    Ready {
        server: PeerId,
    },
}

/// A document on the device, and how it stands with the server.
#[derive(Debug)]
struct DeviceDoc {
    doc: Automerge,
    sync: PeerDocSync,
    /// The server said it does not have it (and we have nothing either).
    unavailable: bool,
}

/// Why the core rejected something the server sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum DeviceError {
    #[error("server sent {0} before the handshake completed")]
    NotJoined(&'static str),
    #[error("server rejected our protocol: {0}")]
    Handshake(String),
    #[error("sync message for document {document_id}: {reason}")]
    Sync {
        document_id: DocumentId,
        reason: String,
    },
}

/// The device's state machine. See the module documentation.
#[derive(Debug)]
pub struct DeviceCore {
    peer_id: PeerId,
    storage_id: Option<StorageId>,
    docs: BTreeMap<DocumentId, DeviceDoc>,
    link: Link,
}

impl DeviceCore {
    pub fn new(peer_id: PeerId, storage_id: Option<StorageId>) -> Self {
        Self {
            peer_id,
            storage_id,
            docs: BTreeMap::new(),
            link: Link::Offline,
        }
    }

    pub fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    pub fn doc(&self, document_id: &DocumentId) -> Option<&Automerge> {
        self.docs.get(document_id).map(|d| &d.doc)
    }

    pub fn document_ids(&self) -> BTreeSet<DocumentId> {
        self.docs.keys().copied().collect()
    }

    /// Whether the server said it does not have this document.
    pub fn is_unavailable(&self, document_id: &DocumentId) -> bool {
        self.docs.get(document_id).is_some_and(|d| d.unavailable)
    }

    /// Starts tracking a document (created here, loaded from the device's
    /// store, or empty to be fetched from the server). If the link is up,
    /// sync starts at once.
    pub fn add_doc(&mut self, document_id: DocumentId, doc: Automerge) -> Vec<DeviceEffect> {
        let mut effects = Vec::new();
        if self.docs.contains_key(&document_id) {
            return effects;
        }
        self.docs.insert(
            document_id,
            DeviceDoc {
                doc,
                sync: PeerDocSync::new(),
                unavailable: false,
            },
        );
        self.start_sync(document_id, &mut effects);
        effects
    }

    /// Applies a local change. `change` gets the document and may commit
    /// any number of transactions.
    pub fn change<R>(
        &mut self,
        document_id: &DocumentId,
        change: impl FnOnce(&mut Automerge) -> R,
    ) -> Option<(R, Vec<DeviceEffect>)> {
        let entry = self.docs.get_mut(document_id)?;
        let heads_before = entry.doc.get_heads();
        let result = change(&mut entry.doc);
        let mut effects = Vec::new();
        if entry.doc.get_heads() != heads_before {
            entry.unavailable = false;
            effects.push(DeviceEffect::Persist {
                document_id: *document_id,
                chunk: entry.doc.save_after(&heads_before),
            });
            effects.push(DeviceEffect::Changed {
                document_id: *document_id,
            });
            self.generate(*document_id, &mut effects);
        }
        Some((result, effects))
    }

    /// Whether the server has acknowledged every local change of the
    /// document. The server answers only from flushed state, so this means
    /// "saved on the server's disk".
    pub fn is_synced(&self, document_id: &DocumentId) -> bool {
        if !matches!(self.link, Link::Ready { .. }) {
            return false;
        }
        self.docs
            .get(document_id)
            .is_some_and(|d| d.sync.peer_has_all_of(&d.doc))
    }

    /// The heads the server last reported for the document on this link.
    pub fn server_heads(&self, document_id: &DocumentId) -> Option<Vec<ChangeHash>> {
        self.docs
            .get(document_id)
            .and_then(|d| d.sync.their_heads().map(<[ChangeHash]>::to_vec))
    }

    /// The transport connected: say `join`.
    pub fn connected(&mut self) -> Vec<DeviceEffect> {
        self.link = Link::Joining;
        for entry in self.docs.values_mut() {
            entry.sync = PeerDocSync::new();
        }
        vec![DeviceEffect::Send(Message::Join {
            sender_id: self.peer_id.clone(),
            supported_protocol_versions: vec![PROTOCOL_VERSION.to_string()],
            peer_metadata: Some(PeerMetadata {
                storage_id: self.storage_id.clone(),
                is_ephemeral: false,
            }),
        })]
    }

    /// The transport went away; local changes keep working.
    pub fn disconnected(&mut self) {
        self.link = Link::Offline;
    }

    /// A message from the server.
    pub fn receive(&mut self, message: Message) -> Result<Vec<DeviceEffect>, DeviceError> {
        let mut effects = Vec::new();
        match message {
            Message::Peer {
                sender_id,
                selected_protocol_version,
                ..
            } => {
                if selected_protocol_version != PROTOCOL_VERSION {
                    return Err(DeviceError::Handshake(format!(
                        "server selected protocol {selected_protocol_version:?}"
                    )));
                }
                self.link = Link::Ready { server: sender_id };
                let ids: Vec<DocumentId> = self.docs.keys().copied().collect();
                for document_id in ids {
                    self.start_sync(document_id, &mut effects);
                }
            }
            Message::Error { message, .. } => {
                effects.push(DeviceEffect::ServerError { message });
            }
            Message::Sync {
                document_id, data, ..
            }
            | Message::Request {
                document_id, data, ..
            } => {
                if !matches!(self.link, Link::Ready { .. }) {
                    return Err(DeviceError::NotJoined("sync"));
                }
                let Some(entry) = self.docs.get_mut(&document_id) else {
                    // Not ours to hold; the server never pushes unasked
                    // documents, so ignore rather than fail.
                    return Ok(effects);
                };
                let heads_before = entry.doc.get_heads();
                entry
                    .sync
                    .receive(&mut entry.doc, &data)
                    .map_err(|error| DeviceError::Sync {
                        document_id,
                        reason: error.to_string(),
                    })?;
                if entry.doc.get_heads() != heads_before {
                    entry.unavailable = false;
                    effects.push(DeviceEffect::Persist {
                        document_id,
                        chunk: entry.doc.save_after(&heads_before),
                    });
                    effects.push(DeviceEffect::Changed { document_id });
                }
                self.generate(document_id, &mut effects);
            }
            Message::DocUnavailable { document_id, .. } => {
                if let Some(entry) = self.docs.get_mut(&document_id) {
                    if entry.doc.get_heads().is_empty() {
                        entry.unavailable = true;
                        effects.push(DeviceEffect::Unavailable { document_id });
                    }
                }
            }
            // Nothing a device needs to act on.
            Message::Ephemeral { .. }
            | Message::RemoteHeadsChanged { .. }
            | Message::RemoteSubscriptionChange { .. }
            | Message::Leave { .. }
            | Message::Join { .. } => {}
        }
        Ok(effects)
    }

    /// First message for a document on a fresh link: `request` if we hold
    /// nothing of it, `sync` otherwise.
    fn start_sync(&mut self, document_id: DocumentId, effects: &mut Vec<DeviceEffect>) {
        let Link::Ready { server } = &self.link else {
            return;
        };
        let Some(entry) = self.docs.get_mut(&document_id) else {
            return;
        };
        let Some(generated) = entry.sync.generate(&entry.doc) else {
            return;
        };
        let sender_id = self.peer_id.clone();
        let target_id = server.clone();
        let data = generated.data;
        let message = if entry.doc.get_heads().is_empty() {
            Message::Request {
                sender_id,
                target_id,
                document_id,
                data,
            }
        } else {
            Message::Sync {
                sender_id,
                target_id,
                document_id,
                data,
            }
        };
        effects.push(DeviceEffect::Send(message));
    }

    fn generate(&mut self, document_id: DocumentId, effects: &mut Vec<DeviceEffect>) {
        let Link::Ready { server } = &self.link else {
            return;
        };
        let Some(entry) = self.docs.get_mut(&document_id) else {
            return;
        };
        if let Some(generated) = entry.sync.generate(&entry.doc) {
            effects.push(DeviceEffect::Send(Message::Sync {
                sender_id: self.peer_id.clone(),
                target_id: server.clone(),
                document_id,
                data: generated.data,
            }));
        }
    }
}
