# make test: virtualenv + requirements + the test suite. make demo: see README.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test test-slow demo bench clean-venv

# the shipped models (ckpts/<job id> cpu@{low,med,high} ...); plotter.py gives --ids to them by increasing bpp
SHIPPED_IDS = $(shell cd ckpts 2>/dev/null && ls -d *' cpu'*'@'* | cut -c1-9 | paste -sd, -)

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

# long checks (marked slow), not part of CI's default run
test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow tests

# compress the sample images with the shipped models (real bitstreams), compare with JPEG/WebP/JPEG2000
demo: $(VENV)/.installed
	$(PY) val.py ckpts $(SHIPPED_IDS) samples --save_ours --real_bpp --reset
	$(PY) other_codecs.py samples --codecs jpeg,webp,jpeg2000 --jobs 2
	$(PY) plotter.py ckpts $(SHIPPED_IDS) samples --style mean --ids low med high -o demo_out/rd_samples.png
	@echo "Reconstructions: ckpts/<job id> samples/imgs/   Plot: demo_out/rd_samples.png"

clean-venv:
	rm -rf $(VENV)
