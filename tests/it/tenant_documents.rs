//! Documents belong to a tenant from their first change, forever (issue
//! 10): every document class × role × tenant over real sockets, against
//! one table of expected access, and each attack the adversarial probe
//! made as a regression test. A refused write is seen as an `error`;
//! that it changed nothing is checked behind a barrier (a later write by
//! someone allowed, which must arrive, then the server's copy).

use std::collections::{BTreeMap, HashMap};

use automerge::sync::State;
use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ReadDoc, ROOT};
use ventas::domain::{
    create_catalog_doc, create_device_doc, create_ledger_doc, create_stock_doc, put_location,
    put_seller, read_catalog, DeviceId, DocKey, Location, LocationId, LocationKind, Period, Seller,
    SellerId, TenantId,
};
use ventas::server::auth::Role;
use ventas_sync_protocol::ids::{DocumentId, PeerId};
use ventas_sync_protocol::wire::Message;

use crate::authorization::{client, created, errors, server_copy, RawDevice};
use crate::harness::{issue_credentials, within, TestServer};

/// (tenant, seller, device, role) of every credential these tests use.
const PEOPLE: &[(&str, &str, &str, Role)] = &[
    ("acme", "boss", "office-1", Role::Office),
    ("acme", "ana", "tab-ana", Role::Seller),
    ("acme", "ana", "phone-ana", Role::Seller),
    ("acme", "audit", "rep-acme", Role::Reporting),
    ("globex", "gboss", "office-globex", Role::Office),
    ("globex", "gus", "tab-gus", Role::Seller),
    ("globex", "gaudit", "rep-globex", Role::Reporting),
];

/// What a connection may do with a document, as seen over the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Hidden,
    Read,
    ReadWrite,
}
use Seen::{Hidden, Read, ReadWrite};

/// Every class of acme's documents -> what acme's office, seller ana and
/// reporting may do with it. Every globex credential sees none of them.
/// "own" is ana's: her device, her ledger, the stock of her van.
const EXPECTED: &[(&str, [Seen; 3])] = &[
    ("plain", [ReadWrite, Hidden, Hidden]),
    ("catalog", [ReadWrite, Read, Read]),
    ("device own", [ReadWrite, ReadWrite, Read]),
    ("device other", [ReadWrite, Hidden, Read]),
    ("ledger own", [ReadWrite, ReadWrite, Read]),
    ("ledger other", [ReadWrite, Hidden, Read]),
    ("stock own", [ReadWrite, ReadWrite, Read]),
    ("stock other", [ReadWrite, Read, Read]),
];

/// The devices of the table's columns, for acme and for globex.
const COLUMNS: [(&str, &str); 3] = [
    ("office-1", "office-globex"),
    ("tab-ana", "tab-gus"),
    ("rep-acme", "rep-globex"),
];

struct Setup {
    server: TestServer,
    tokens: HashMap<&'static str, String>,
}

impl Setup {
    async fn start(adjust: impl FnOnce(&mut ventas::config::ServerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let wanted: Vec<_> = PEOPLE
            .iter()
            .map(|(tenant, seller, device, role)| (*tenant, *seller, *device, *role, None))
            .collect();
        let tokens = issue_credentials(dir.path(), &wanted)
            .into_iter()
            .zip(PEOPLE.iter().map(|(_, _, device, _)| *device))
            .map(|(token, device)| (device, token))
            .collect();
        Self {
            server: TestServer::start_in(dir, adjust).await,
            tokens,
        }
    }

    async fn device(&self, device: &str) -> RawDevice {
        RawDevice::connect(&self.server.url(), device, &self.tokens[device]).await
    }

    /// `device` (an office) creates `doc` on the server, through the Rust
    /// client; returns its id once the server acknowledged it.
    async fn create(&self, device: &str, doc: Automerge) -> DocumentId {
        let dir = tempfile::tempdir().expect("dir");
        let office = client(&self.server.url(), dir.path(), device, &self.tokens[device]);
        let handle = created(&office, doc).await;
        let document_id = handle.document_id();
        drop(handle);
        office.close().await.expect("close");
        document_id
    }

    /// The server's copy of `document_id` once it holds `device`'s copy.
    async fn copy_after(&self, device: &RawDevice, document_id: DocumentId) -> Automerge {
        let heads = device.docs[&document_id].0.get_heads();
        server_copy(
            self.server.addr(),
            &self.tokens["office-1"],
            document_id,
            heads,
        )
        .await
    }
}

fn acme() -> TenantId {
    TenantId::new("acme").expect("id")
}

fn period() -> Period {
    Period::parse("2026-11").expect("period")
}

fn seller(name: &str) -> SellerId {
    SellerId::new(name).expect("id")
}

/// A document as a stock automerge-repo client makes it: `{sales: []}`.
fn plain_sales() -> Automerge {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put_object(ROOT, "sales", ObjType::List).expect("list");
    tx.commit();
    doc
}

fn catalog_of(tenant: &TenantId, van_seller: &str) -> Automerge {
    let mut catalog = create_catalog_doc(tenant).expect("catalog");
    put_location(
        &mut catalog,
        &Location {
            id: LocationId::new("van-ana").expect("id"),
            name: "Van".into(),
            kind: LocationKind::Vehicle,
            seller: Some(seller(van_seller)),
        },
    )
    .expect("location");
    put_seller(
        &mut catalog,
        &Seller {
            id: seller(van_seller),
            name: van_seller.into(),
        },
    )
    .expect("seller");
    catalog
}

/// One document of each class of [`EXPECTED`], created by acme's office.
async fn acme_documents(setup: &Setup) -> BTreeMap<&'static str, DocumentId> {
    let device = |name: &str| DeviceId::new(name).expect("id");
    let location = |name: &str| LocationId::new(name).expect("id");
    let docs = [
        ("catalog", catalog_of(&acme(), "ana")),
        ("plain", plain_sales()),
        (
            "device own",
            create_device_doc(&acme(), &device("tab-ana"), &seller("ana"), "K1").expect("doc"),
        ),
        (
            "device other",
            create_device_doc(&acme(), &device("tab-bob"), &seller("bob"), "K2").expect("doc"),
        ),
        (
            "ledger own",
            create_ledger_doc(&acme(), &seller("ana"), period()).expect("doc"),
        ),
        (
            "ledger other",
            create_ledger_doc(&acme(), &seller("bob"), period()).expect("doc"),
        ),
        (
            "stock own",
            create_stock_doc(&acme(), &location("van-ana"), period(), &[]).expect("doc"),
        ),
        (
            "stock other",
            create_stock_doc(&acme(), &location("store-1"), period(), &[]).expect("doc"),
        ),
    ];
    let mut ids = BTreeMap::new();
    for (class, doc) in docs {
        ids.insert(class, setup.create("office-1", doc).await);
    }
    ids
}

/// What `device` may do with each document: fetch it, then write a root
/// key and see whether the server takes it.
async fn observe(
    setup: &Setup,
    device: &'static str,
    docs: &BTreeMap<&'static str, DocumentId>,
) -> Vec<(&'static str, &'static str, Seen)> {
    let mut peer = setup.device(device).await;
    let mut seen = Vec::new();
    for (class, document_id) in docs {
        let access = match peer.fetch(*document_id).await {
            Err(_) => Hidden,
            Ok(_) => {
                peer.mark(*document_id, &format!("probe-{device}"));
                let heard = peer.push(*document_id).await;
                match errors(&heard).len() {
                    0 if peer.acknowledged(*document_id) => ReadWrite,
                    1 => Read,
                    _ => panic!("{device} on {class}: {heard:?}"),
                }
            }
        };
        seen.push((*class, device, access));
    }
    peer.close().await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_document_class_role_and_tenant_gets_the_access_of_the_table() {
    let setup = Setup::start(|_| {}).await;
    let docs = acme_documents(&setup).await;
    let devices: Vec<&'static str> = COLUMNS.iter().flat_map(|(a, g)| [*a, *g]).collect();
    let observed =
        futures_util::future::join_all(devices.iter().map(|device| observe(&setup, device, &docs)))
            .await;
    let observed: HashMap<(&str, &str), Seen> = observed
        .into_iter()
        .flatten()
        .map(|(class, device, seen)| ((class, device), seen))
        .collect();
    let mut wrong = Vec::new();
    for (class, expected) in EXPECTED {
        for ((acme_device, globex_device), want) in COLUMNS.iter().zip(expected) {
            for (device, want) in [(acme_device, *want), (globex_device, Hidden)] {
                let got = observed[&(*class, *device)];
                if got != want {
                    wrong.push(format!(
                        "{class} x {device}: expected {want:?}, got {got:?}"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Changes `device`'s copy of `document_id` with `change`.
fn change(device: &mut RawDevice, document_id: DocumentId, change: impl FnOnce(&mut Automerge)) {
    let (doc, _) = device
        .docs
        .entry(document_id)
        .or_insert_with(|| (Automerge::new(), State::new()));
    change(doc);
}

fn meta_put(doc: &mut Automerge, key: &str, value: &str) {
    let meta = doc.get(ROOT, "meta").expect("get").expect("meta").1;
    let mut tx = doc.transaction();
    tx.put(&meta, key, value).expect("put");
    tx.commit();
}

fn meta_string(doc: &Automerge, key: &str) -> Option<String> {
    let meta = doc.get(ROOT, "meta").ok()??.1;
    doc.get(&meta, key)
        .ok()??
        .0
        .into_scalar()
        .ok()?
        .into_string()
        .ok()
}

/// `device` pushes its copy of `document_id`: exactly one `error`, naming
/// `meta`.
async fn refused_for_meta(device: &mut RawDevice, document_id: DocumentId) {
    let heard = device.push(document_id).await;
    let refused = errors(&heard);
    assert_eq!(refused.len(), 1, "{heard:?}");
    assert!(refused[0].contains("meta"), "{refused:?}");
}

/// The barrier: ana, from her other device, writes `key` to her ledger and
/// the server takes it; returns the server's copy after it.
async fn after_anas_next_write(setup: &Setup, ledger: DocumentId, key: &str) -> Automerge {
    let mut phone = setup.device("phone-ana").await;
    phone.fetch(ledger).await.expect("her ledger");
    phone.write_accepted(ledger, key).await;
    let copy = setup.copy_after(&phone, ledger).await;
    phone.close().await;
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globex_office_neither_reads_nor_writes_acmes_plain_sales_document() {
    let setup = Setup::start(|_| {}).await;
    let sales = setup.create("office-1", plain_sales()).await;
    let mut globex = setup.device("office-globex").await;
    globex.fetch(sales).await.expect_err("hidden");
    // It pushes a change anyway: still nothing but doc-unavailable.
    globex.mark(sales, "globex-was-here");
    let heard = globex.push(sales).await;
    assert!(errors(&heard).is_empty(), "{heard:?}");
    globex.close().await;
    // Barrier: acme's own office writes after it; the server's copy has
    // acme's write and not globex's.
    let mut office = setup.device("office-1").await;
    office.fetch(sales).await.expect("acme's");
    office.write_accepted(sales, "acme-after").await;
    let copy = setup.copy_after(&office, sales).await;
    assert!(copy.get(ROOT, "acme-after").expect("get").is_some());
    assert!(copy.get(ROOT, "globex-was-here").expect("get").is_none());
}

/// Ana changes her ledger's `meta` with `mutate` and pushes it: refused.
/// Returns the server's copy after her next write from another device (the
/// barrier), once `outsider` (of globex) still finds the ledger hidden.
async fn anas_meta_change_is_refused(
    mutate: impl FnOnce(&mut Automerge),
    outsider: &str,
) -> Automerge {
    let setup = Setup::start(|_| {}).await;
    let ledger = setup
        .create(
            "office-1",
            create_ledger_doc(&acme(), &seller("ana"), period()).expect("doc"),
        )
        .await;
    let mut ana = setup.device("tab-ana").await;
    ana.fetch(ledger).await.expect("her ledger");
    change(&mut ana, ledger, mutate);
    refused_for_meta(&mut ana, ledger).await;
    let copy = after_anas_next_write(&setup, ledger, "after").await;
    let mut other = setup.device(outsider).await;
    other.fetch(ledger).await.expect_err("hidden");
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seller_cannot_move_her_ledger_to_another_tenant() {
    let copy =
        anas_meta_change_is_refused(|doc| meta_put(doc, "tenant", "globex"), "tab-gus").await;
    assert_eq!(meta_string(&copy, "tenant").as_deref(), Some("acme"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_schema_version_does_not_open_a_ledger_to_other_tenants() {
    let delete = |doc: &mut Automerge| {
        let meta = doc.get(ROOT, "meta").expect("get").expect("meta").1;
        let mut tx = doc.transaction();
        tx.delete(&meta, "schema_version").expect("delete");
        tx.commit();
    };
    let copy = anas_meta_change_is_refused(delete, "office-globex").await;
    let meta = copy.get(ROOT, "meta").expect("get").expect("meta").1;
    assert!(copy.get(&meta, "schema_version").expect("get").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seller_cannot_turn_her_ledger_into_another_tenants_catalog() {
    let into_catalog = |doc: &mut Automerge| {
        meta_put(doc, "kind", "catalog");
        meta_put(doc, "tenant", "globex");
        meta_put(doc, "owner", "globex");
    };
    let copy = anas_meta_change_is_refused(into_catalog, "office-globex").await;
    assert_eq!(meta_string(&copy, "kind").as_deref(), Some("ledger"));
    assert_eq!(meta_string(&copy, "tenant").as_deref(), Some("acme"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_globex_office_creates_globex_catalog_and_the_keeper_uses_the_real_one_under_its_own_actors(
) {
    let setup = Setup::start(|config| config.period_check_interval_ms = 200).await;
    let globex = TenantId::new("globex").expect("id");
    // acme's office plants a catalog for globex, with its own seller.
    let planted = DocumentId::from_bytes(rand::random());
    let mut acme_office = setup.device("office-1").await;
    change(&mut acme_office, planted, |doc| {
        *doc = catalog_of(&globex, "planted")
    });
    let heard = acme_office.push(planted).await;
    let refused = errors(&heard);
    assert_eq!(refused.len(), 1, "{heard:?}");
    assert!(refused[0].contains("tenant"), "{refused:?}");
    acme_office.close().await;

    // globex's real catalog, created afterwards, is globex's catalog: the
    // keeper opens this month's ledger for its seller and lists it there.
    let real = setup
        .create("office-globex", catalog_of(&globex, "gus"))
        .await;
    let this_month = Period::of_ms(i64::try_from(ventas::now_ms()).expect("fits"));
    let wanted = DocKey::ledger(&seller("gus"), this_month);
    let wanted_again = wanted.clone();
    let dir = tempfile::tempdir().expect("dir");
    let office = client(
        &setup.server.url(),
        dir.path(),
        "office-globex",
        &setup.tokens["office-globex"],
    );
    let handle = office.open_url(&format!("automerge:{real}")).expect("open");
    within(
        "the keeper lists gus's ledger in globex's real catalog",
        handle.wait_until(move |doc| read_catalog(doc).find_doc(&wanted).is_some()),
    )
    .await
    .expect("alive");
    // The planted catalog never reached the server.
    let mut globex_office = setup.device("office-globex").await;
    globex_office
        .fetch(planted)
        .await
        .expect_err("no such document");

    // The keeper's actors are bound to it: gus may write his new ledger,
    // but not as the keeper who created it.
    let url = handle
        .read(move |doc| {
            read_catalog(doc)
                .find_doc(&wanted_again)
                .map(str::to_string)
        })
        .expect("read")
        .expect("listed");
    let ledger = DocumentId::parse(&url).expect("url");
    let mut gus = setup.device("tab-gus").await;
    gus.fetch(ledger).await.expect("his ledger");
    let keeper = gus.docs[&ledger].0.get_changes(&[])[0].actor_id().clone();
    change(&mut gus, ledger, |doc| {
        doc.set_actor(keeper);
    });
    let refused = gus.write_refused(ledger, "as-the-keeper").await;
    assert!(refused.contains("another device"), "{refused}");
    drop(handle);
    office.close().await.expect("close");
}

/// An ephemeral message (presence, cursors) from `from` about
/// `document_id`, claiming to be from `sender`, in session `session`.
fn ephemeral(
    from: &RawDevice,
    sender: &PeerId,
    document_id: DocumentId,
    session: &str,
    count: u64,
) -> Message {
    Message::Ephemeral {
        sender_id: sender.clone(),
        target_id: from.server.clone(),
        count,
        session_id: session.to_string(),
        document_id,
        // An empty CBOR map: the server forwards the bytes untouched.
        data: vec![0xa0],
    }
}

/// Reads `device`'s messages until the ephemeral message of `session`
/// arrives (it must, within [`crate::harness::WAIT_MS_MAX`]); returns the
/// ephemeral messages heard before it, and it.
async fn ephemerals_until(device: &mut RawDevice, session: &str) -> (Vec<Message>, Message) {
    let mut before = Vec::new();
    loop {
        let message = within("an ephemeral message", device.peer.recv())
            .await
            .expect("the server closed the connection");
        match &message {
            Message::Ephemeral { session_id, .. } if session_id == session => {
                return (before, message)
            }
            Message::Ephemeral { .. } => before.push(message),
            _ => {}
        }
    }
}

/// Ana's ledger, created by acme's office, open on her tablet and phone.
async fn ana_ledger_on_tablet_and_phone(setup: &Setup) -> (DocumentId, RawDevice, RawDevice) {
    let ledger = setup
        .create(
            "office-1",
            create_ledger_doc(&acme(), &seller("ana"), period()).expect("doc"),
        )
        .await;
    let mut tablet = setup.device("tab-ana").await;
    let mut phone = setup.device("phone-ana").await;
    tablet.fetch(ledger).await.expect("her ledger");
    phone.fetch(ledger).await.expect("her ledger");
    (ledger, tablet, phone)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_messages_about_a_document_reach_only_its_readers() {
    let setup = Setup::start(|_| {}).await;
    let (ledger, mut tablet, mut phone) = ana_ledger_on_tablet_and_phone(&setup).await;
    let mut globex = setup.device("office-globex").await;
    globex.fetch(ledger).await.expect_err("hidden from globex");

    // Globex's office cannot hear acme's: the tablet's message reaches the
    // phone (so the server has handled it), and globex's barrier after that
    // shows nothing reached globex before it.
    let tablet_id = tablet.peer.peer_id.clone();
    let message = ephemeral(&tablet, &tablet_id, ledger, "tablet", 1);
    tablet.peer.send(&message).await;
    let (before, heard) = ephemerals_until(&mut phone, "tablet").await;
    assert!(before.is_empty(), "{before:?}");
    assert!(
        matches!(&heard, Message::Ephemeral { sender_id, document_id, .. }
            if *sender_id == tablet_id && *document_id == ledger),
        "{heard:?}"
    );
    let barrier = globex.peer.barrier(&globex.server).await;
    assert!(!barrier.closed);
    assert!(barrier.before.is_empty(), "{:?}", barrier.before);

    // Nor can it speak about acme's document: its message is not forwarded.
    // Barrier: after globex's own barrier (the server has handled its
    // message), the phone speaks, and the tablet hears the phone first.
    let globex_id = globex.peer.peer_id.clone();
    let forged = ephemeral(&globex, &globex_id, ledger, "globex", 1);
    globex.peer.send(&forged).await;
    let barrier = globex.peer.barrier(&globex.server).await;
    assert!(!barrier.closed, "{:?}", barrier.before);
    assert!(
        barrier
            .before
            .iter()
            .all(|m| !matches!(m, Message::Ephemeral { .. } | Message::Sync { .. })),
        "{:?}",
        barrier.before
    );
    let phone_id = phone.peer.peer_id.clone();
    let message = ephemeral(&phone, &phone_id, ledger, "phone", 1);
    phone.peer.send(&message).await;
    let (before, _) = ephemerals_until(&mut tablet, "phone").await;
    assert!(
        before.is_empty(),
        "globex reached acme's readers: {before:?}"
    );

    tablet.close().await;
    phone.close().await;
    globex.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_message_under_another_peers_id_is_not_forwarded_as_theirs() {
    let setup = Setup::start(|_| {}).await;
    let (ledger, mut tablet, mut phone) = ana_ledger_on_tablet_and_phone(&setup).await;
    let mut office = setup.device("office-1").await;
    office.fetch(ledger).await.expect("acme's");

    // The tablet speaks as the office, then as itself: the phone hears the
    // second, and nothing before it under the office's name (or any other).
    let office_id = office.peer.peer_id.clone();
    let tablet_id = tablet.peer.peer_id.clone();
    let forged = ephemeral(&tablet, &office_id, ledger, "forged", 1);
    tablet.peer.send(&forged).await;
    let genuine = ephemeral(&tablet, &tablet_id, ledger, "genuine", 1);
    tablet.peer.send(&genuine).await;
    for device in [&mut phone, &mut office] {
        let (before, heard) = ephemerals_until(device, "genuine").await;
        assert!(before.is_empty(), "forwarded as another peer: {before:?}");
        assert!(
            matches!(&heard, Message::Ephemeral { sender_id, .. } if *sender_id == tablet_id),
            "{heard:?}"
        );
    }

    tablet.close().await;
    phone.close().await;
    office.close().await;
}
