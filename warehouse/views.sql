-- Views over a medpclip corpus. `{corpus}` is replaced by the corpus directory (quoted for SQL).
-- Every unit writes all four manifests (empty ones included), so each glob matches once a unit finished.
CREATE OR REPLACE VIEW samples AS
  SELECT * FROM read_parquet('{corpus}/manifests/samples/*/*.parquet', union_by_name = true);
CREATE OR REPLACE VIEW regions AS
  SELECT * FROM read_parquet('{corpus}/manifests/regions/*/*.parquet', union_by_name = true);
CREATE OR REPLACE VIEW sources AS
  SELECT * FROM read_parquet('{corpus}/manifests/sources/*/*.parquet', union_by_name = true);
-- Includes plan-stage rejects (manifests/rejects/{dataset}/plan.parquet) with unit = -1.
CREATE OR REPLACE VIEW rejects AS
  SELECT * FROM read_parquet('{corpus}/manifests/rejects/*/*.parquet', union_by_name = true);
CREATE OR REPLACE VIEW units AS
  SELECT * EXCLUDE (shards) FROM read_json('{corpus}/manifests/units/*/*.json', union_by_name = true);
CREATE OR REPLACE VIEW shards AS
  SELECT dataset, unit, s.path AS path, split_part(s.path, '/', 3) AS split,
         s.n_samples AS n_samples, s.bytes AS bytes, s.sha256 AS sha256
  FROM (SELECT dataset, unit, unnest(shards) AS s
        FROM read_json('{corpus}/manifests/units/*/*.json', union_by_name = true));
-- Every concept of the knowledge base (medpclip/text/data/concepts.jsonl) with how much of the corpus uses
-- it; regions name their concept by `concept_id`.
CREATE OR REPLACE VIEW concepts AS
  WITH kb AS (
    SELECT * FROM read_json('{kb}', format = 'newline_delimited', columns = {
      concept_id: 'VARCHAR', canonical_name: 'VARCHAR', aliases: 'VARCHAR[]', types: 'VARCHAR[]',
      definition: 'VARCHAR', cui: 'VARCHAR', local_id: 'VARCHAR', type_names: 'VARCHAR[]',
      category: 'VARCHAR', parent: 'VARCHAR', spellings: 'VARCHAR[]'})),
  used AS (
    SELECT concept_id, count(*) AS n_regions, count(DISTINCT key) AS n_samples,
           list(DISTINCT dataset ORDER BY dataset) AS datasets
    FROM regions WHERE concept_id IS NOT NULL GROUP BY concept_id)
  SELECT kb.concept_id, kb.cui, kb.local_id, kb.canonical_name AS name, kb.category, kb.parent,
         kb.types AS semantic_types, kb.type_names, kb.definition, kb.aliases,
         coalesce(used.n_regions, 0) AS n_regions, coalesce(used.n_samples, 0) AS n_samples,
         coalesce(used.datasets, []::VARCHAR[]) AS datasets
  FROM kb LEFT JOIN used USING (concept_id)
  ORDER BY kb.concept_id;
