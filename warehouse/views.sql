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
-- The concepts the corpus uses (the knowledge base adds definitions and semantic types to regions).
CREATE OR REPLACE VIEW concepts AS
  SELECT cui, min(name) AS name, min(category) AS category,
         count(*) AS n_regions, count(DISTINCT key) AS n_samples, list(DISTINCT dataset ORDER BY dataset) AS datasets
  FROM regions WHERE cui IS NOT NULL GROUP BY cui;
