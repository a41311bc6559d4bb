# make test: virtualenv + requirements + the test suite. make demo: see README.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test test-slow demo results bench clean-venv

# the shipped models (ckpts/<job id> cpu2@{low,med,high} ...): the job id of one, and all three for val.py
# (plotter.py gives --ids to them by increasing bpp)
shipped_id = $(shell cd ckpts 2>/dev/null && ls -d *' cpu'*'@$(1) '* | cut -c1-9)
comma := ,
empty :=
space := $(empty) $(empty)
SHIPPED_IDS = $(subst $(space),$(comma),$(strip $(foreach m,low med high,$(call shipped_id,$(m)))))

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

# the README's results of the shipped models on Kodak (measured once per model, never used to choose anything):
# real files, the RD plots next to the classical codecs (other_codecs/*_kodak) and the paper, luma/chroma PSNR
# against WebP at the same rate on six images, with crops (figs/colour_<model>/)
KODAK ?= ../shared/data/kodak
KODAK6 = kodim01,kodim03,kodim05,kodim14,kodim20,kodim23
COLOUR_CROPS ?= --crop kodim23:300,150,192,128 --crop kodim05:260,200,192,128
results: $(VENV)/.installed
	$(PY) val.py ckpts $(SHIPPED_IDS) $(KODAK) --save_ours --real_bpp
	$(PY) plotter.py ckpts $(SHIPPED_IDS) kodak --style mean --ids low med high --paper_plot \
		-o figs/rd_kodak_shipped_ms-ssim.png
	$(PY) plotter.py ckpts $(SHIPPED_IDS) kodak --style mean --ids low med high --metric psnr \
		-o figs/rd_kodak_shipped_psnr.png --at_bpp 0.37,0.677,1.051
	$(foreach m,low med high,$(PY) colour_compare.py "ckpts/$(call shipped_id,$(m)) kodak" $(KODAK) \
		--only $(KODAK6) $(COLOUR_CROPS) -o figs/colour_$(m) &&) true

clean-venv:
	rm -rf $(VENV)
