//! Parsed operations, kept by their text.
//!
//! Clients send the same few operations over and over, and parsing one costs more than
//! executing a simple one. The parse of an operation depends on nothing but its text, so
//! a parse made for one request is as good for the next; validation still runs every time.

use std::sync::Arc;

use async_graphql::parser::types::ExecutableDocument;

use crate::cache::BoundedCache;

/// Operations kept.
const MAX_ENTRIES: usize = 256;
/// Longer operations are parsed every time rather than kept.
const MAX_QUERY_BYTES: usize = 4096;

pub struct DocumentCache {
    parsed: BoundedCache<Arc<ExecutableDocument>>,
}

impl Default for DocumentCache {
    fn default() -> Self {
        Self {
            parsed: BoundedCache::new(MAX_ENTRIES),
        }
    }
}

impl DocumentCache {
    /// Gives `request` its parsed operation from the cache, or parses it and keeps the result.
    /// A query that does not parse is left for execution to report.
    pub fn prepare(&self, request: &mut async_graphql::Request) {
        if request.query.len() > MAX_QUERY_BYTES {
            return;
        }
        if let Some(document) = self.parsed.get(&request.query) {
            request.set_parsed_query(ExecutableDocument::clone(&document));
            return;
        }
        let Ok(document) = request.parsed_query() else {
            return;
        };
        let document = Arc::new(document.clone());
        self.parsed.insert(request.query.clone(), document);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_parse_is_reused_and_the_cache_stays_bounded() {
        let cache = DocumentCache::default();
        let mut first = async_graphql::Request::new("{ me { id } }");
        cache.prepare(&mut first);
        assert_eq!(cache.parsed.len(), 1);
        let mut again = async_graphql::Request::new("{ me { id } }");
        cache.prepare(&mut again);
        assert_eq!(cache.parsed.len(), 1);
        assert!(again.parsed_query().is_ok());

        let mut broken = async_graphql::Request::new("{ me { ");
        cache.prepare(&mut broken);
        assert_eq!(cache.parsed.len(), 1, "failed parses are not kept");

        for n in 0..MAX_ENTRIES + 10 {
            cache.prepare(&mut async_graphql::Request::new(format!("{{ f{n} }}")));
        }
        assert!(cache.parsed.len() <= MAX_ENTRIES);
    }
}
