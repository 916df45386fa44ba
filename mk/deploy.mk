# Deployment artefacts (issue 5): Dockerfile, k8s/, deploy/ and the Lambda handler.
#
#   make deploy-tools   validation tools into $(DEPLOY_VENV) (pinned by requirements/deploy.txt)
#                       and the CRD schemas for k8s/ (npm, pinned by tests/deploy/crd/)
#                       and promtool for the alert rules' tests (Debian's prometheus package)
#   make deploy-check   tests/deploy only: hadolint, kustomize + schemas, cfn-lint, checkov,
#                       IAM against the code, the Lambda handler on moto
#   make image-test     opt-in: build the image with podman from a local Debian base, run it
#   make lambda-bundle  build/lambda/, the code bundle deploy/telemax-lambda.yaml deploys
DEPLOY_VENV ?= .venv-deploy
export DEPLOY_VENV
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed
CRD_STAMP := $(DEPLOY_VENV)/crd/node_modules/.installed
# promtool comes from Debian's prometheus package (no root: apt-get download + dpkg-deb -x).
# A Debian point release replaces the version in the archive: then bump the pin. Without apt's
# package lists (a fresh machine) the download is retried after `apt-get update` (needs root).
PROMETHEUS_DEB := 2.42.0+ds-5+deb12u1
PROMTOOL_STAMP := $(DEPLOY_VENV)/.promtool-$(PROMETHEUS_DEB)

.PHONY: deploy-tools deploy-check image-test lambda-bundle

$(DEPLOY_STAMP): requirements/deploy.txt
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(DEPLOY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-r requirements/deploy.txt
	touch $@

$(CRD_STAMP): tests/deploy/crd/package.json tests/deploy/crd/package-lock.json
	mkdir -p $(DEPLOY_VENV)/crd
	cp tests/deploy/crd/package.json tests/deploy/crd/package-lock.json $(DEPLOY_VENV)/crd/
	cd $(DEPLOY_VENV)/crd && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(PROMTOOL_STAMP):
	mkdir -p $(DEPLOY_VENV)/bin
	rm -rf $(DEPLOY_VENV)/promtool-deb
	mkdir $(DEPLOY_VENV)/promtool-deb
	cd $(DEPLOY_VENV)/promtool-deb && { apt-get download -q prometheus=$(PROMETHEUS_DEB) \
		|| { apt-get update -q && apt-get download -q prometheus=$(PROMETHEUS_DEB); }; }
	dpkg-deb -x $(DEPLOY_VENV)/promtool-deb/prometheus_*.deb $(DEPLOY_VENV)/promtool-deb/root
	cp $(DEPLOY_VENV)/promtool-deb/root/usr/bin/promtool $(DEPLOY_VENV)/bin/promtool
	rm -rf $(DEPLOY_VENV)/promtool-deb
	$(DEPLOY_VENV)/bin/promtool --version
	touch $@

deploy-tools: $(DEPLOY_STAMP) $(CRD_STAMP) $(PROMTOOL_STAMP)

TEST_DEPS += deploy-tools

deploy-check: $(STAMP) deploy-tools
	$(PY) -m pytest -q tests/deploy

# Not part of `make test`: needs podman, runc and debootstrap (installed with apt-get when
# missing and running as root) and builds for a few minutes. Removes the images it made.
image-test: $(STAMP)
	timeout 1500 $(PY) tests/deploy/image_test.py

lambda-bundle:
	PYTHON=$(PYTHON) deploy/lambda/build.sh

.PHONY: clean-deploy
clean-deploy:
	rm -rf $(DEPLOY_VENV) build/lambda build/lambda-dist

clean: clean-deploy
