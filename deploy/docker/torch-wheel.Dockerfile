# Carries one torch wheel to the CPU render build (deploy/docker/render-cpu.Dockerfile): its build
# context is a folder holding only that wheel (deploy/docker/build-images.sh makes it), so the
# repository's build context stays small and the wheel is sent to Docker once, then cached.
FROM scratch
COPY *.whl /wheels/
