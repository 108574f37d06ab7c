# Ringline server image. Build: docker build -t ringline .
# Run:   docker run -p 8080:8080 ringline            (built-in defaults)
#        docker run -p 8080:8080 -v $PWD/my.toml:/etc/ringline.toml ringline serve --config /etc/ringline.toml --host 0.0.0.0
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY ringline ringline
COPY engine engine
COPY api api
COPY config config
COPY benchmarks benchmarks
RUN pip install --no-cache-dir -c constraints.txt . && useradd --system ringline \
    && mkdir -p /var/lib/ringline && chown ringline /var/lib/ringline
# The SQLite store and call recordings (or set [api] database_url to PostgreSQL).
ENV RINGLINE_DATA_DIR=/var/lib/ringline
VOLUME /var/lib/ringline
USER ringline

EXPOSE 8080
ENTRYPOINT ["ringline"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health').status != 200)"
