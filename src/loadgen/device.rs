//! A simulated device: a [`DeviceCore`] over one WebSocket, no store.
//!
//! [`Fixture`] builds the domain documents every device shares (one tenant's
//! catalog, read once into a [`CatalogView`]) and each device's own (its
//! device document and its seller's ledger for this month, from the
//! domain's `create_*_doc`). [`SimDevice::record_sale`] records a sale with
//! [`record_sale`] through the core, which sends it when the link is up;
//! [`SimDevice::receive`] applies what the server sends and moves the sale
//! queue: a sale leaves [`SimDevice::pending`] once the server's heads
//! cover it (its acknowledgement).
//!
//! Each device's ledger has one writer, so its history is a line and "the
//! server's heads cover the sale" is "the server's head is this sale's
//! change or a later one".

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::{Automerge, ChangeHash};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{DeviceCore, LoadgenError};
use crate::domain::{
    create_catalog_doc, create_device_doc, create_ledger_doc, put_customer, put_location,
    put_product, read_catalog, record_sale, CatalogView, Currency, Customer, CustomerId, DeviceId,
    Location, LocationId, LocationKind, Period, Product, ProductId, SaleInput, SaleLineInput,
    SellerId, TenantId,
};
use crate::protocol::device::{DeviceEffect, Link};
use crate::protocol::ids::{DocumentId, PeerId};
use crate::protocol::wire::{self, Message, MESSAGE_BYTES_MAX_DEFAULT};

/// A device socket's read buffer: small, so ten thousand idle devices fit
/// in the load generator (tungstenite's default is 128 KiB each).
pub const SOCKET_READ_BUFFER_BYTES: usize = 8 * 1024;
/// Connect plus `join`/`peer` handshake, per device.
pub const CONNECT_TIMEOUT_MS: u64 = 30_000;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The documents every simulated device shares: one tenant, its catalog,
/// the current month and the sale every device records (two lines).
#[derive(Debug)]
pub struct Fixture {
    pub tenant: TenantId,
    pub catalog: CatalogView,
    pub period: Period,
    pub sale: SaleInput,
}

impl Fixture {
    /// A tenant with two products, a customer and a warehouse, made with
    /// the domain's catalog functions; sales are dated now.
    pub fn new() -> Result<Self, LoadgenError> {
        let tenant = TenantId::new("bench")?;
        let mut catalog = create_catalog_doc(&tenant)?;
        let eur = Currency::new("EUR")?;
        for (id, name, cents) in [("soap", "Soap", 250), ("brush", "Brush", 1_190)] {
            put_product(
                &mut catalog,
                &Product {
                    id: ProductId::new(id)?,
                    name: name.into(),
                    unit_price_cents: cents,
                    currency: eur,
                    active: true,
                },
            )?;
        }
        let customer = CustomerId::new("shop-9")?;
        put_customer(
            &mut catalog,
            &Customer {
                id: customer.clone(),
                name: "Corner shop".into(),
            },
        )?;
        let location = LocationId::new("warehouse")?;
        put_location(
            &mut catalog,
            &Location {
                id: location.clone(),
                name: "Warehouse".into(),
                kind: LocationKind::Warehouse,
                seller: None,
            },
        )?;
        let at_ms = i64::try_from(crate::now_ms()).unwrap_or(i64::MAX);
        Ok(Self {
            tenant,
            catalog: read_catalog(&catalog),
            period: Period::of_ms(at_ms),
            sale: SaleInput {
                customer,
                location,
                at_ms,
                lines: vec![
                    SaleLineInput {
                        product: ProductId::new("soap")?,
                        quantity: 3,
                    },
                    SaleLineInput {
                        product: ProductId::new("brush")?,
                        quantity: 1,
                    },
                ],
            },
        })
    }

    /// Device `name`'s device document and its own seller's empty ledger.
    pub fn device_docs(&self, name: &str) -> Result<(Automerge, Automerge), LoadgenError> {
        let seller = SellerId::new(format!("seller-{name}"))?;
        let device = DeviceId::new(name)?;
        let device_doc = create_device_doc(&self.tenant, &device, &seller, name)?;
        let ledger = create_ledger_doc(&self.tenant, &seller, self.period)?;
        Ok((device_doc, ledger))
    }
}

/// A fresh random document id (as automerge-repo makes them).
pub fn random_document_id() -> DocumentId {
    DocumentId::from_bytes(rand::random())
}

/// When each change was made, so an observer can time its arrival.
pub type SentTimes = Arc<Mutex<HashMap<ChangeHash, Instant>>>;

/// One simulated device. See the module documentation.
#[derive(Debug)]
pub struct SimDevice {
    core: DeviceCore,
    /// The device document (record counter); kept on the device only.
    device_doc: Option<Automerge>,
    /// The document this device writes or watches.
    pub ledger: DocumentId,
    fixture: Arc<Fixture>,
    /// Recorded sales the server has not acknowledged, oldest first.
    pending: VecDeque<(ChangeHash, Instant)>,
    pub recorded: u64,
    pub acknowledged: u64,
    /// Microseconds from recording to acknowledgement, per sale.
    pub ack_latencies_us: Vec<f64>,
    pub last_ack_at: Option<Instant>,
    /// Changes to time on arrival (an observer), and the samples, in µs.
    watch: Option<SentTimes>,
    pub arrival_latencies_us: Vec<f64>,
    /// Change times to publish for an observer (a writer).
    publish: Option<SentTimes>,
}

impl SimDevice {
    /// A device with its own ledger, new to the server.
    pub fn writer(fixture: Arc<Fixture>, name: &str) -> Result<Self, LoadgenError> {
        let (device_doc, ledger_doc) = fixture.device_docs(name)?;
        let ledger = random_document_id();
        let mut core = DeviceCore::new(PeerId::new(name), None);
        // Offline: adding a document sends nothing yet.
        let _ = core.add_doc(ledger, ledger_doc);
        Ok(Self::with_core(core, Some(device_doc), ledger, fixture))
    }

    /// A device that opens another device's ledger (held by the server) and
    /// times the arrival of changes listed in `sent`.
    pub fn observer(
        fixture: Arc<Fixture>,
        name: &str,
        ledger: DocumentId,
        sent: SentTimes,
    ) -> Self {
        let mut core = DeviceCore::new(PeerId::new(name), None);
        let _ = core.add_doc(ledger, Automerge::new());
        let mut device = Self::with_core(core, None, ledger, fixture);
        device.watch = Some(sent);
        device
    }

    /// A device that only joins (an idle connection) or opens `document`.
    pub fn reader(fixture: Arc<Fixture>, name: &str, document: Option<DocumentId>) -> Self {
        let mut core = DeviceCore::new(PeerId::new(name), None);
        let ledger = document.unwrap_or_else(random_document_id);
        if document.is_some() {
            let _ = core.add_doc(ledger, Automerge::new());
        }
        Self::with_core(core, None, ledger, fixture)
    }

    fn with_core(
        core: DeviceCore,
        device_doc: Option<Automerge>,
        ledger: DocumentId,
        fixture: Arc<Fixture>,
    ) -> Self {
        Self {
            core,
            device_doc,
            ledger,
            fixture,
            pending: VecDeque::new(),
            recorded: 0,
            acknowledged: 0,
            ack_latencies_us: Vec::new(),
            last_ack_at: None,
            watch: None,
            arrival_latencies_us: Vec::new(),
            publish: None,
        }
    }

    /// Publish each recorded sale's change time to an observer.
    pub fn publish_to(&mut self, sent: SentTimes) {
        self.publish = Some(sent);
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.core.link(), Link::Ready { .. })
    }

    /// Whether the server acknowledged every change of the ledger.
    pub fn is_synced(&self) -> bool {
        self.core.is_synced(&self.ledger)
    }

    /// Whether the watched or opened document has arrived.
    pub fn has_document(&self) -> bool {
        self.core
            .doc(&self.ledger)
            .is_some_and(|doc| !doc.get_heads().is_empty())
    }

    pub fn ledger_doc(&self) -> Option<&Automerge> {
        self.core.doc(&self.ledger)
    }

    /// Records one sale into the ledger (sent at once if the link is up).
    pub fn record_sale(&mut self) -> Result<Vec<DeviceEffect>, LoadgenError> {
        let device_doc = self
            .device_doc
            .as_mut()
            .ok_or_else(|| LoadgenError::Protocol("an observer records no sales".into()))?;
        let fixture = &self.fixture;
        let (result, effects) = self
            .core
            .change(&self.ledger, |ledger| {
                record_sale(device_doc, ledger, &fixture.catalog, &fixture.sale)
                    .map(|_| ledger.get_heads())
            })
            .ok_or_else(|| LoadgenError::Protocol("the device lost its ledger".into()))?;
        let heads = result?;
        let now = Instant::now();
        for head in heads {
            self.pending.push_back((head, now));
            if let Some(publish) = &self.publish {
                publish
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(head, now);
            }
        }
        self.recorded += 1;
        Ok(effects)
    }

    /// The transport connected: the `join` to send.
    pub fn connected(&mut self) -> Vec<DeviceEffect> {
        self.core.connected()
    }

    pub fn disconnected(&mut self) {
        self.core.disconnected();
    }

    /// Applies a message from the server; settles acknowledged sales and
    /// times watched changes.
    pub fn receive(&mut self, message: Message) -> Result<Vec<DeviceEffect>, LoadgenError> {
        let heads_before = self
            .watch
            .as_ref()
            .and_then(|_| self.core.doc(&self.ledger))
            .map(|doc| doc.get_heads());
        let effects = self
            .core
            .receive(message)
            .map_err(|error| LoadgenError::Protocol(error.to_string()))?;
        let now = Instant::now();
        if let (Some(before), Some(watch), Some(doc)) =
            (heads_before, &self.watch, self.core.doc(&self.ledger))
        {
            if doc.get_heads() != before {
                let mut sent = watch
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                for change in doc.get_changes(&before) {
                    if let Some(at) = sent.remove(&change.hash()) {
                        self.arrival_latencies_us
                            .push(now.duration_since(at).as_secs_f64() * 1e6);
                    }
                }
            }
        }
        self.settle(now);
        Ok(effects)
    }

    /// Drops every pending sale the server's heads now cover.
    fn settle(&mut self, now: Instant) {
        if self.pending.is_empty() {
            return;
        }
        let covered = match self.core.server_heads(&self.ledger) {
            Some(heads) => self
                .pending
                .iter()
                .rposition(|(hash, _)| heads.contains(hash))
                .map(|position| position + 1),
            None => None,
        };
        let covered = covered.or_else(|| self.is_synced().then_some(self.pending.len()));
        if let Some(count) = covered {
            for (_, recorded_at) in self.pending.drain(..count) {
                self.ack_latencies_us
                    .push(now.duration_since(recorded_at).as_secs_f64() * 1e6);
            }
            self.acknowledged += count as u64;
            self.last_ack_at = Some(now);
        }
    }
}

/// Opens a WebSocket to `url` with small buffers.
pub async fn connect(url: &str) -> Result<Socket, LoadgenError> {
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = SOCKET_READ_BUFFER_BYTES;
    config.write_buffer_size = 0;
    config.max_message_size = Some(MESSAGE_BYTES_MAX_DEFAULT);
    config.max_frame_size = Some(MESSAGE_BYTES_MAX_DEFAULT);
    let connecting = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    let (socket, _) = within(CONNECT_TIMEOUT_MS, "the websocket upgrade", connecting).await??;
    Ok(socket)
}

/// `future`, or a timeout error naming `what`.
pub async fn within<T>(
    after_ms: u64,
    what: &str,
    future: impl std::future::Future<Output = T>,
) -> Result<T, LoadgenError> {
    tokio::time::timeout(Duration::from_millis(after_ms), future)
        .await
        .map_err(|_| LoadgenError::Timeout {
            what: what.to_string(),
            after_ms,
        })
}

/// Sends the `Send` effects as binary frames, one flush at the end.
pub async fn send_effects(
    socket: &mut Socket,
    effects: Vec<DeviceEffect>,
) -> Result<(), LoadgenError> {
    let mut sent = false;
    for effect in effects {
        match effect {
            DeviceEffect::Send(message) => {
                socket
                    .feed(WsMessage::Binary(wire::encode(&message).into()))
                    .await?;
                sent = true;
            }
            DeviceEffect::ServerError { message } => {
                return Err(LoadgenError::ServerError(message))
            }
            DeviceEffect::Persist { .. }
            | DeviceEffect::Changed { .. }
            | DeviceEffect::Unavailable { .. } => {}
        }
    }
    if sent {
        socket.flush().await?;
    }
    Ok(())
}

/// What one read from the socket gave.
pub enum Frame {
    Message(Message),
    /// Ping, pong or text: nothing for the core.
    Other,
}

/// Turns one socket item into a protocol message.
pub fn frame(
    item: Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>,
) -> Result<Frame, LoadgenError> {
    match item {
        None => Err(LoadgenError::Closed),
        Some(Err(error)) => Err(error.into()),
        Some(Ok(WsMessage::Binary(bytes))) => wire::decode(&bytes, MESSAGE_BYTES_MAX_DEFAULT)
            .map(Frame::Message)
            .map_err(|error| LoadgenError::Protocol(format!("undecodable frame: {error}"))),
        Some(Ok(WsMessage::Close(_))) => Err(LoadgenError::Closed),
        Some(Ok(_)) => Ok(Frame::Other),
    }
}

/// Reads one item and hands a message to the device; sends its answer.
pub async fn pump(
    socket: &mut Socket,
    device: &mut SimDevice,
    item: Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>,
) -> Result<(), LoadgenError> {
    if let Frame::Message(message) = frame(item)? {
        let effects = device.receive(message)?;
        send_effects(socket, effects).await?;
    }
    Ok(())
}

/// Handles every frame already waiting, without blocking.
pub async fn pump_ready(socket: &mut Socket, device: &mut SimDevice) -> Result<(), LoadgenError> {
    while let Some(item) = socket.next().now_or_never() {
        pump(socket, device, item).await?;
    }
    Ok(())
}

/// Reads and applies messages until `done(device)` holds.
pub async fn pump_until(
    socket: &mut Socket,
    device: &mut SimDevice,
    after_ms: u64,
    what: &str,
    done: impl Fn(&SimDevice) -> bool,
) -> Result<(), LoadgenError> {
    let work = async {
        while !done(device) {
            let item = socket.next().await;
            pump(socket, device, item).await?;
        }
        Ok::<(), LoadgenError>(())
    };
    within(after_ms, what, work).await?
}

/// Connects, says `join`, and waits for the server's `peer` (the device's
/// documents start syncing then).
pub async fn connect_and_join(url: &str, device: &mut SimDevice) -> Result<Socket, LoadgenError> {
    let mut socket = connect(url).await?;
    let join = device.connected();
    send_effects(&mut socket, join).await?;
    pump_until(
        &mut socket,
        device,
        CONNECT_TIMEOUT_MS,
        "the peer handshake",
        SimDevice::is_ready,
    )
    .await?;
    Ok(socket)
}
