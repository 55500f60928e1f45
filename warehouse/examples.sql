-- Example questions (run one with: medpclip query --corpus OUT "<statement>")

-- How many regions per label, modality and split?
SELECT label, modality, split, count(*) AS regions FROM regions GROUP BY ALL ORDER BY ALL;

-- How many liver regions from CT, by dataset and split?
SELECT dataset, split, count(*) AS regions FROM regions
WHERE category = 'liver' AND modality = 'CT' GROUP BY ALL ORDER BY ALL;

-- Patient leakage: patients that appear in more than one split (must return no rows).
SELECT dataset, patient_id, list(DISTINCT split) AS splits FROM samples
GROUP BY ALL HAVING count(DISTINCT split) > 1;

-- Why were items or regions rejected?
SELECT dataset, stage, reason, count(*) AS n FROM rejects GROUP BY ALL ORDER BY n DESC;

-- Does every shard hold what the manifests say? (no rows = consistent)
SELECT sh.path, sh.n_samples, count(s.key) AS in_manifest FROM shards sh
LEFT JOIN samples s ON s.shard = sh.path GROUP BY ALL HAVING sh.n_samples <> count(s.key);
