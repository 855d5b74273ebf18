//! A read-through cache over a document for whole-document reads: one
//! walk over the document (`iter_at`) fills every map and list object's
//! values ([`CachedDoc::whole`]), and `get`s and list lengths are answered
//! from memory (an object the walk missed is filled with one
//! `map_range`/`list_range` pass on first use). The domain readers ask for
//! each field of each record separately; one walk is several times cheaper
//! than a lookup per field and about 1.6x cheaper than a pass per object
//! (see BENCHMARKS.md, "Export"). Only for full exports: a selective read
//! would pay for caching the whole document it looks at a part of.
//!
//! Answers equal the document's: a key the pass did not cache (absent, or
//! a counter, whose value the pass does not resolve the same way) is asked
//! of the document itself.

use std::cell::RefCell;
use std::ops::RangeBounds;

use automerge::iter::{DocItem, DocIter, DocObjItem, Keys, ListRange, MapRange, Spans, Values};
use automerge::marks::{Mark, MarkSet};
use automerge::{
    hydrate, AutomergeError, Change, ChangeHash, Cursor, CursorPosition, MoveCursor, ObjId,
    ObjType, Parents, Prop, ReadDoc, ScalarValue, Stats, TextEncoding, Value,
};
use rustc_hash::FxHashMap as HashMap;

type Cached = (Value<'static>, ObjId);

#[derive(Default)]
struct Fields {
    map: HashMap<String, Cached>,
    /// Every element of a list object, in order (`None`: not cacheable).
    list: Vec<Option<Cached>>,
}

/// See the module documentation.
pub(crate) struct CachedDoc<'d, D: ReadDoc> {
    doc: &'d D,
    objects: RefCell<HashMap<ObjId, Fields>>,
}

impl<'d, D: ReadDoc> CachedDoc<'d, D> {
    /// A cache filled with every map and list value of the document in one
    /// walk (`iter_at`): cheaper than a `map_range` per object when the
    /// reader will look at every record anyway. Objects the walk saw no
    /// value of (empty ones) are filled on first use as usual.
    pub fn whole(doc: &'d D) -> Self {
        let mut objects: HashMap<ObjId, Fields> = HashMap::default();
        let mut current: Option<(ObjId, Fields)> = None;
        for DocObjItem { obj, item } in doc.iter_at(automerge::ROOT, None) {
            if current.as_ref().is_none_or(|(id, _)| id != obj.as_ref()) {
                // The walk gives an object's values together; if it comes
                // back to one, its fields so far are taken up again.
                if let Some((id, fields)) = current.take() {
                    objects.insert(id, fields);
                }
                let id = obj.as_ref().clone();
                let fields = objects.remove(&id).unwrap_or_default();
                current = Some((id, fields));
            }
            let Some((_, fields)) = current.as_mut() else {
                continue;
            };
            match item {
                DocItem::Map(item) => {
                    let id = item.id();
                    let value: Value<'static> = item.value.into_value();
                    if Self::cacheable(&value) {
                        fields.map.insert(item.key.into_owned(), (value, id));
                    }
                }
                DocItem::List(item) => {
                    let id = item.id();
                    let index = item.index;
                    let value: Value<'static> = item.value.into_value();
                    if fields.list.len() <= index {
                        fields.list.resize(index + 1, None);
                    }
                    fields.list[index] = Self::cacheable(&value).then_some((value, id));
                }
                // Text is read from the document itself.
                DocItem::Text(_) => {}
            }
        }
        if let Some((id, fields)) = current.take() {
            objects.insert(id, fields);
        }
        Self {
            doc,
            objects: RefCell::new(objects),
        }
    }

    fn cacheable(value: &Value<'_>) -> bool {
        !matches!(value, Value::Scalar(scalar) if matches!(scalar.as_ref(), ScalarValue::Counter(_)))
    }

    fn fill(&self, obj: &ObjId, prop: &Prop) -> Fields {
        let mut fields = Fields::default();
        match prop {
            Prop::Map(_) => {
                for item in self.doc.map_range(obj, ..) {
                    let id = item.id();
                    let value: Value<'static> = item.value.into_value();
                    if Self::cacheable(&value) {
                        fields.map.insert(item.key.into_owned(), (value, id));
                    }
                }
            }
            Prop::Seq(_) => {
                for item in self.doc.list_range(obj, ..) {
                    let id = item.id();
                    let value: Value<'static> = item.value.into_value();
                    fields
                        .list
                        .push(Self::cacheable(&value).then_some((value, id)));
                }
            }
        }
        fields
    }
}

impl<D: ReadDoc> ReadDoc for CachedDoc<'_, D> {
    fn get<O: AsRef<ObjId>, P: Into<Prop>>(
        &self,
        obj: O,
        prop: P,
    ) -> Result<Option<(Value<'_>, ObjId)>, AutomergeError> {
        let obj = obj.as_ref();
        let prop = prop.into();
        if !self.objects.borrow().contains_key(obj) {
            let fields = self.fill(obj, &prop);
            self.objects.borrow_mut().insert(obj.clone(), fields);
        }
        let found = {
            let objects = self.objects.borrow();
            objects.get(obj).and_then(|fields| match &prop {
                Prop::Map(key) => fields.map.get(key.as_str()).cloned(),
                Prop::Seq(index) => fields.list.get(*index).cloned().flatten(),
            })
        };
        match found {
            Some((value, id)) => Ok(Some((value, id))),
            None => self.doc.get(obj, prop),
        }
    }

    fn parents<O: AsRef<ObjId>>(&self, obj: O) -> Result<Parents<'_>, AutomergeError> {
        self.doc.parents(obj)
    }
    fn parents_at<O: AsRef<ObjId>>(
        &self,
        obj: O,
        heads: &[ChangeHash],
    ) -> Result<Parents<'_>, AutomergeError> {
        self.doc.parents_at(obj, heads)
    }
    fn keys<O: AsRef<ObjId>>(&self, obj: O) -> Keys<'_> {
        self.doc.keys(obj)
    }
    fn keys_at<O: AsRef<ObjId>>(&self, obj: O, heads: &[ChangeHash]) -> Keys<'_> {
        self.doc.keys_at(obj, heads)
    }
    fn iter_at<O: AsRef<ObjId>>(&self, obj: O, heads: Option<&[ChangeHash]>) -> DocIter<'_> {
        self.doc.iter_at(obj, heads)
    }
    fn map_range<'a, O: AsRef<ObjId>, R: RangeBounds<String> + 'a>(
        &'a self,
        obj: O,
        range: R,
    ) -> MapRange<'a> {
        self.doc.map_range(obj, range)
    }
    fn map_range_at<'a, O: AsRef<ObjId>, R: RangeBounds<String> + 'a>(
        &'a self,
        obj: O,
        range: R,
        heads: &[ChangeHash],
    ) -> MapRange<'a> {
        self.doc.map_range_at(obj, range, heads)
    }
    fn list_range<O: AsRef<ObjId>, R: RangeBounds<usize>>(
        &self,
        obj: O,
        range: R,
    ) -> ListRange<'_> {
        self.doc.list_range(obj, range)
    }
    fn list_range_at<O: AsRef<ObjId>, R: RangeBounds<usize>>(
        &self,
        obj: O,
        range: R,
        heads: &[ChangeHash],
    ) -> ListRange<'_> {
        self.doc.list_range_at(obj, range, heads)
    }
    fn values<O: AsRef<ObjId>>(&self, obj: O) -> Values<'_> {
        self.doc.values(obj)
    }
    fn values_at<O: AsRef<ObjId>>(&self, obj: O, heads: &[ChangeHash]) -> Values<'_> {
        self.doc.values_at(obj, heads)
    }
    fn length<O: AsRef<ObjId>>(&self, obj: O) -> usize {
        // A cached list holds every element (a placeholder for those it
        // does not cache), so its length is the list's.
        let obj = obj.as_ref();
        let cached = self
            .objects
            .borrow()
            .get(obj)
            .filter(|fields| !fields.list.is_empty())
            .map(|fields| fields.list.len());
        match cached {
            Some(length) => length,
            None => self.doc.length(obj),
        }
    }
    fn length_at<O: AsRef<ObjId>>(&self, obj: O, heads: &[ChangeHash]) -> usize {
        self.doc.length_at(obj, heads)
    }
    fn object_type<O: AsRef<ObjId>>(&self, obj: O) -> Result<ObjType, AutomergeError> {
        self.doc.object_type(obj)
    }
    fn marks<O: AsRef<ObjId>>(&self, obj: O) -> Result<Vec<Mark>, AutomergeError> {
        self.doc.marks(obj)
    }
    fn marks_at<O: AsRef<ObjId>>(
        &self,
        obj: O,
        heads: &[ChangeHash],
    ) -> Result<Vec<Mark>, AutomergeError> {
        self.doc.marks_at(obj, heads)
    }
    fn get_marks<O: AsRef<ObjId>>(
        &self,
        obj: O,
        index: usize,
        heads: Option<&[ChangeHash]>,
    ) -> Result<MarkSet, AutomergeError> {
        self.doc.get_marks(obj, index, heads)
    }
    fn text<O: AsRef<ObjId>>(&self, obj: O) -> Result<String, AutomergeError> {
        self.doc.text(obj)
    }
    fn text_at<O: AsRef<ObjId>>(
        &self,
        obj: O,
        heads: &[ChangeHash],
    ) -> Result<String, AutomergeError> {
        self.doc.text_at(obj, heads)
    }
    fn spans<O: AsRef<ObjId>>(&self, obj: O) -> Result<Spans<'_>, AutomergeError> {
        self.doc.spans(obj)
    }
    fn spans_at<O: AsRef<ObjId>>(
        &self,
        obj: O,
        heads: &[ChangeHash],
    ) -> Result<Spans<'_>, AutomergeError> {
        self.doc.spans_at(obj, heads)
    }
    fn get_cursor<O: AsRef<ObjId>, I: Into<CursorPosition>>(
        &self,
        obj: O,
        position: I,
        at: Option<&[ChangeHash]>,
    ) -> Result<Cursor, AutomergeError> {
        self.doc.get_cursor(obj, position, at)
    }
    fn get_cursor_moving<O: AsRef<ObjId>, I: Into<CursorPosition>>(
        &self,
        obj: O,
        position: I,
        at: Option<&[ChangeHash]>,
        move_cursor: MoveCursor,
    ) -> Result<Cursor, AutomergeError> {
        self.doc.get_cursor_moving(obj, position, at, move_cursor)
    }
    fn get_cursor_position<O: AsRef<ObjId>>(
        &self,
        obj: O,
        cursor: &Cursor,
        at: Option<&[ChangeHash]>,
    ) -> Result<usize, AutomergeError> {
        self.doc.get_cursor_position(obj, cursor, at)
    }
    fn get_at<O: AsRef<ObjId>, P: Into<Prop>>(
        &self,
        obj: O,
        prop: P,
        heads: &[ChangeHash],
    ) -> Result<Option<(Value<'_>, ObjId)>, AutomergeError> {
        self.doc.get_at(obj, prop, heads)
    }
    fn hydrate<O: AsRef<ObjId>>(
        &self,
        obj: O,
        heads: Option<&[ChangeHash]>,
    ) -> Result<hydrate::Value, AutomergeError> {
        self.doc.hydrate(obj, heads)
    }
    fn get_all<O: AsRef<ObjId>, P: Into<Prop>>(
        &self,
        obj: O,
        prop: P,
    ) -> Result<Vec<(Value<'_>, ObjId)>, AutomergeError> {
        self.doc.get_all(obj, prop)
    }
    fn get_all_at<O: AsRef<ObjId>, P: Into<Prop>>(
        &self,
        obj: O,
        prop: P,
        heads: &[ChangeHash],
    ) -> Result<Vec<(Value<'_>, ObjId)>, AutomergeError> {
        self.doc.get_all_at(obj, prop, heads)
    }
    fn get_missing_deps(&self, heads: &[ChangeHash]) -> Vec<ChangeHash> {
        self.doc.get_missing_deps(heads)
    }
    fn get_change_by_hash(&self, hash: &ChangeHash) -> Option<Change> {
        self.doc.get_change_by_hash(hash)
    }
    fn stats(&self) -> Stats {
        self.doc.stats()
    }
    fn text_encoding(&self) -> TextEncoding {
        self.doc.text_encoding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, Automerge, ROOT};
    use proptest::prelude::*;

    /// One edit of a random document.
    #[derive(Debug, Clone)]
    enum Edit {
        PutScalar { key: u8, value: i64 },
        PutMap { key: u8 },
        PutList { key: u8 },
        PutCounter { key: u8, value: i64 },
        Increment { key: u8 },
        Insert { value: i64 },
        InsertCounter,
        IncrementFirst,
        DeleteKey { key: u8 },
        DeleteFirst,
        PutText { key: u8 },
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (0u8..6, any::<i64>()).prop_map(|(key, value)| Edit::PutScalar { key, value }),
            (0u8..6).prop_map(|key| Edit::PutMap { key }),
            (0u8..6).prop_map(|key| Edit::PutList { key }),
            (0u8..6, -5i64..5).prop_map(|(key, value)| Edit::PutCounter { key, value }),
            (0u8..6).prop_map(|key| Edit::Increment { key }),
            any::<i64>().prop_map(|value| Edit::Insert { value }),
            Just(Edit::InsertCounter),
            Just(Edit::IncrementFirst),
            (0u8..6).prop_map(|key| Edit::DeleteKey { key }),
            Just(Edit::DeleteFirst),
            (0u8..6).prop_map(|key| Edit::PutText { key }),
        ]
    }

    /// Every map and list object of `doc`, depth first.
    fn objects<R: ReadDoc>(doc: &R) -> Vec<(ObjId, ObjType)> {
        let mut found = vec![(ROOT, ObjType::Map)];
        let mut at = 0;
        while at < found.len() {
            let (obj, _) = found[at].clone();
            at += 1;
            for item in doc.map_range(&obj, ..) {
                let id = item.id();
                if let Value::Object(kind) = item.value.into_value() {
                    found.push((id, kind));
                }
            }
            for item in doc.list_range(&obj, ..) {
                let id = item.id();
                if let Value::Object(kind) = item.value.into_value() {
                    found.push((id, kind));
                }
            }
        }
        found
    }

    /// Applies `edits` to `doc`, each inside a map or list it picks among
    /// the document's objects.
    fn apply(doc: &mut Automerge, edits: &[(u8, Edit)]) {
        let mut transaction = doc.transaction();
        let doc = &mut transaction;
        for (pick, edit) in edits {
            let targets = objects(doc);
            let maps: Vec<ObjId> = targets
                .iter()
                .filter(|(_, kind)| *kind == ObjType::Map)
                .map(|(obj, _)| obj.clone())
                .collect();
            let lists: Vec<ObjId> = targets
                .iter()
                .filter(|(_, kind)| *kind == ObjType::List)
                .map(|(obj, _)| obj.clone())
                .collect();
            let map = maps[*pick as usize % maps.len()].clone();
            let key = |key: &u8| format!("k{key}");
            // Errors (incrementing a non-counter, ...) leave the document
            // as it was, which is as good a case as any.
            let _ = match edit {
                Edit::PutScalar { key: k, value } => doc.put(&map, key(k), *value),
                Edit::PutMap { key: k } => doc.put_object(&map, key(k), ObjType::Map).map(drop),
                Edit::PutList { key: k } => doc.put_object(&map, key(k), ObjType::List).map(drop),
                Edit::PutCounter { key: k, value } => {
                    doc.put(&map, key(k), ScalarValue::counter(*value))
                }
                Edit::Increment { key: k } => doc.increment(&map, key(k), 3),
                Edit::DeleteKey { key: k } => doc.delete(&map, key(k)),
                Edit::PutText { key: k } => doc
                    .put_object(&map, key(k), ObjType::Text)
                    .and_then(|text| doc.splice_text(&text, 0, 0, "hi")),
                Edit::Insert { value } => match lists.get(*pick as usize % lists.len().max(1)) {
                    Some(list) => doc.insert(list, 0, *value),
                    None => Ok(()),
                },
                Edit::InsertCounter => match lists.get(*pick as usize % lists.len().max(1)) {
                    Some(list) => doc.insert(list, 0, ScalarValue::counter(1)),
                    None => Ok(()),
                },
                Edit::IncrementFirst => match lists.first() {
                    Some(list) if doc.length(list) > 0 => doc.increment(list, 0, 2),
                    _ => Ok(()),
                },
                Edit::DeleteFirst => match lists.first() {
                    Some(list) if doc.length(list) > 0 => doc.delete(list, 0),
                    _ => Ok(()),
                },
            };
        }
        transaction.commit();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The filled cache answers every `get` and `length` as the
        /// document does, with concurrent edits merged (conflicts, counters,
        /// deletions, empty and text objects).
        #[test]
        fn a_whole_cache_answers_as_the_document(
            common in proptest::collection::vec((any::<u8>(), edit()), 0..20),
            left in proptest::collection::vec((any::<u8>(), edit()), 0..20),
            right in proptest::collection::vec((any::<u8>(), edit()), 0..20),
        ) {
            let mut doc = Automerge::new().with_actor(ActorId::from(b"left".to_vec()));
            apply(&mut doc, &common);
            let mut other = doc.fork().with_actor(ActorId::from(b"right".to_vec()));
            apply(&mut doc, &left);
            apply(&mut other, &right);
            doc.merge(&mut other).expect("merge");

            let cached = CachedDoc::whole(&doc);
            for (obj, kind) in objects(&doc) {
                prop_assert_eq!(cached.length(&obj), doc.length(&obj));
                match kind {
                    ObjType::Map => {
                        for key in (0..6).map(|k| format!("k{k}")).chain(["absent".to_string()]) {
                            prop_assert_eq!(
                                cached.get(&obj, key.as_str()).expect("cached"),
                                doc.get(&obj, key.as_str()).expect("doc")
                            );
                        }
                    }
                    _ => {
                        for index in 0..doc.length(&obj) + 2 {
                            prop_assert_eq!(
                                cached.get(&obj, index).expect("cached"),
                                doc.get(&obj, index).expect("doc")
                            );
                        }
                    }
                }
            }
        }
    }
}
