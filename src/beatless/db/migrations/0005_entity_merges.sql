-- 0005: the audit of entity resolution (`resolve_entities`): one row per node merged into
-- another, with why (the rule and its score), reviewable after the fact. A rerun of the
-- same operation records nothing twice (UNIQUE per operation and merged node).

CREATE TABLE entity_merges (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operation_id text NOT NULL,
    graph_id text NOT NULL,
    node_table text NOT NULL,
    canonical_key text NOT NULL,
    canonical_name text NOT NULL,
    merged_key text NOT NULL,
    merged_name text NOT NULL,
    rule text NOT NULL CHECK (rule IN ('exact', 'acronym', 'token_subset', 'similar')),
    score double precision NOT NULL CHECK (score > 0 AND score <= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (operation_id, graph_id, node_table, merged_key)
);
COMMENT ON TABLE entity_merges IS
    'Entity resolution audit: each node merged into a canonical one, with the rule and score that matched it.';
CREATE INDEX entity_merges_by_graph ON entity_merges (graph_id, created_at);
