//! A read-through cache over a document for whole-document reads: the
//! first `get` into a map or list object fetches all of that object's
//! values in one `map_range`/`list_range` pass, and later `get`s into it
//! are answered from memory. The domain readers ask for each field of each
//! record separately; one pass per record is several times cheaper (see
//! BENCHMARKS.md, "Export"). Only for full exports: a selective read would
//! pay for caching whole containers it looks at one key of.
//!
//! Answers equal the document's: a key the pass did not cache (absent, or
//! a counter, whose value the pass does not resolve the same way) is asked
//! of the document itself.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::RangeBounds;

use automerge::iter::{DocIter, Keys, ListRange, MapRange, Spans, Values};
use automerge::marks::{Mark, MarkSet};
use automerge::{
    hydrate, AutomergeError, Change, ChangeHash, Cursor, CursorPosition, MoveCursor, ObjId,
    ObjType, Parents, Prop, ReadDoc, ScalarValue, Stats, TextEncoding, Value,
};

type Cached = (Value<'static>, ObjId);

#[derive(Default)]
struct Fields {
    map: HashMap<String, Cached>,
    list: Vec<Option<Cached>>,
}

/// See the module documentation.
pub(crate) struct CachedDoc<'d, D: ReadDoc> {
    doc: &'d D,
    objects: RefCell<HashMap<ObjId, Fields>>,
}

impl<'d, D: ReadDoc> CachedDoc<'d, D> {
    pub fn new(doc: &'d D) -> Self {
        Self {
            doc,
            objects: RefCell::new(HashMap::new()),
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
        self.doc.length(obj)
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
