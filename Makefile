# medpclip: `make demo` and `make test` work on a fresh clone; everything installs into .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
DEMO   ?= demo
WHEELS := .cache/wheels
TS_VERSION := 2.18.0
TS_WHEEL := $(WHEELS)/totalsegmentator-$(TS_VERSION)-py3-none-any.whl
XRV_VERSION := 1.5.7
XRV_WHEEL := $(WHEELS)/torchxrayvision-$(XRV_VERSION)-py3-none-any.whl
export PYTHONHASHSEED := 0
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED := 0
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: setup browser demo test test-fast bench lint clean

setup: $(STAMP) $(TS_WHEEL) $(XRV_WHEEL)

# torch first, from this machine's local files, then everything else pinned by constraints.txt with the same
# torch pin repeated so nothing pulls another build (README, "Operations").
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -qq --upgrade pip
	$(PIP) install -qq torch==2.14.1 torchvision==0.29.1
	$(PIP) install -qq -c constraints.txt -e '.[dev]' torch==2.14.1 torchvision==0.29.1
	$(PIP) check
	touch $(STAMP)

# The TotalSegmentator wheel, never installed (its dependencies are heavy): tests/test_volume_datasets.py
# reads class_map["total"] from its map_to_binary.py to check the totalsegmentator spec's labels.
$(TS_WHEEL): | $(STAMP)
	$(PIP) download -qq --no-deps --only-binary :all: TotalSegmentator==$(TS_VERSION) -d $(WHEELS)

# The torchxrayvision wheel, never installed: it ships IU X-ray's report XMLs (data/NLMCXR_reports.tgz), which
# tests/test_report_language.py and bench/bench_reports.py score the report linker on (ids <= 2000 only).
$(XRV_WHEEL): | $(STAMP)
	$(PIP) download -qq --no-deps --only-binary :all: torchxrayvision==$(XRV_VERSION) -d $(WHEELS)

demo: setup
	$(VENV)/bin/medpclip demo-data $(DEMO)/raw
	$(VENV)/bin/medpclip build --spec demo_ct,demo_polyp,demo_cxr --raw-root $(DEMO)/raw --out $(DEMO)/corpus --max-side 512
	$(VENV)/bin/medpclip validate --corpus $(DEMO)/corpus
	$(VENV)/bin/medpclip query --corpus $(DEMO)/corpus \
	  "SELECT dataset, split, count(*) AS samples, sum(n_regions) AS regions FROM samples GROUP BY ALL ORDER BY ALL"
	@echo "demo corpus: $(abspath $(DEMO)/corpus)   (try: $(VENV)/bin/medpclip query --corpus $(DEMO)/corpus \"SELECT * FROM concepts\")"

# The report test renders the HTML build report in Debian's headless Chromium.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (report rendering tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: setup browser
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# medspaCy, the report benchmark's anchor (bench/anchors/medspacy_context.py), in a venv of its own: it pins
# its own spaCy. Bench-only; the project never imports it.
MEDSPACY_VENV := .cache/medspacy-venv
$(MEDSPACY_VENV)/bin/python:
	$(PYTHON) -m venv $(MEDSPACY_VENV)
	$(MEDSPACY_VENV)/bin/pip install -qq medspacy==1.3.1 spacy==3.7.5

# MedSAM's pre_CT_MR.py, the peer of bench/bench_peer.py, in a venv of its own (its own numpy); its code is
# not in this repository (bench/bench_peer.py says how to fetch the exact commit). Bench-only.
MEDSAM_VENV := .cache/medsam-venv
$(MEDSAM_VENV)/bin/python:
	$(PYTHON) -m venv $(MEDSAM_VENV)
	$(MEDSAM_VENV)/bin/pip install -qq SimpleITK==2.5.7 connected-components-3d==4.1.1 tqdm==4.70.1 numpy==2.4.6

bench: setup $(MEDSPACY_VENV)/bin/python $(MEDSAM_VENV)/bin/python
	$(PY) -m bench.run_all

lint: setup
	$(VENV)/bin/ruff check medpclip tests bench
	$(VENV)/bin/ruff format --check medpclip tests bench

clean:
	rm -rf $(DEMO) .pytest_cache
