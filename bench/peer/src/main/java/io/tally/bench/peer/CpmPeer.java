package io.tally.bench.peer;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.time.LocalDate;
import java.time.LocalTime;
import java.time.ZoneId;
import java.time.ZonedDateTime;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Collectors;

import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyKeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * CPM counts per contract, billing period and price point from Avro impressions: what a team
 * would build with Kafka Streams instead of Tally's metering, doing the same work per record.
 *
 * <p>Per impression: decode the Avro single-object encoding (C3 01 + CRC-64-AVRO fingerprint
 * + body, fingerprint checked), drop invalid traffic (ivt != none), find the contract through
 * the campaign, drop impressions outside the flight (flight end is 23:59:59.999999 local on
 * the end date), drop duplicate impression ids (a persistent store; duplicates share the
 * household key, so they meet in one partition), then count per
 * {@code contract|period|rate} (calendar month in the contract's zone) through a repartition.
 *
 * <p>Run: {@code CpmPeer --bootstrap B --topic T --schema impression.avsc --contracts file.tsv
 * --expected-input N --expected-billable M --out counts.tsv [--guarantee exactly_once_v2]
 * [--threads 1] [--timeout-s 300]}. The contracts file has one line per campaign:
 * {@code campaign_id TAB contract_id TAB zone TAB rate TAB flight_start TAB flight_end}.
 * It prints one JSON line: records, seconds (first record to the last count visible in the
 * store), records_per_s; and writes every count to {@code --out}.
 */
public final class CpmPeer {
    static final String SEEN_STORE = "seen-impressions";
    static final String COUNT_STORE = "cpm-counts";

    record Contract(String contractId, ZoneId zone, String rate, long flightStartMicros, long flightEndMicros) {}

    private CpmPeer() {}

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = parseArgs(argv);
        String bootstrap = args.getOrDefault("bootstrap", "127.0.0.1:9092");
        String topic = required(args, "topic");
        Schema schema = new Schema.Parser().parse(Path.of(required(args, "schema")).toFile());
        Map<String, Contract> byCampaign = loadContracts(Path.of(required(args, "contracts")));
        long expectedInput = Long.parseLong(required(args, "expected-input"));
        long expectedBillable = Long.parseLong(required(args, "expected-billable"));
        Path out = Path.of(required(args, "out"));
        String guarantee = args.getOrDefault("guarantee", StreamsConfig.EXACTLY_ONCE_V2);
        int threads = Integer.parseInt(args.getOrDefault("threads", "1"));
        long timeoutS = Long.parseLong(args.getOrDefault("timeout-s", "300"));
        String appId = "tally-bench-peer-" + UUID.randomUUID();
        Path stateDir = Files.createTempDirectory("tally-bench-peer");

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

        AtomicLong processed = new AtomicLong();
        AtomicLong firstRecordNanos = new AtomicLong();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        long fingerprint = SchemaNormalization.parsingFingerprint64(schema);

        StreamsBuilder builder = new StreamsBuilder();
        builder.addStateStore(Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(SEEN_STORE), Serdes.String(), Serdes.Long()));
        builder.stream(topic, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                .process(() -> new RateProcessor(schema, fingerprint, byCampaign, processed, firstRecordNanos), SEEN_STORE)
                .groupByKey(Grouped.with("cpm", Serdes.String(), Serdes.Long()))
                .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as(COUNT_STORE)
                        .withKeySerde(Serdes.String()));

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        streams.setUncaughtExceptionHandler(exc -> {
            failure.set(exc);
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        long startNanos = System.nanoTime();
        streams.start();
        int exit = 0;
        try {
            long deadline = startNanos + TimeUnit.SECONDS.toNanos(timeoutS);
            Map<String, Long> counts = null;
            long doneNanos = 0;
            while (System.nanoTime() < deadline && failure.get() == null) {
                if (processed.get() >= expectedInput && streams.state() == KafkaStreams.State.RUNNING) {
                    Map<String, Long> snapshot = readCounts(streams);
                    long sum = snapshot.values().stream().mapToLong(Long::longValue).sum();
                    if (sum >= expectedBillable) {
                        doneNanos = System.nanoTime();
                        counts = snapshot;
                        break;
                    }
                }
                Thread.sleep(20);
            }
            if (failure.get() != null) {
                throw new IllegalStateException("stream thread failed", failure.get());
            }
            if (counts == null) {
                System.out.printf("{\"error\": \"timeout after %d s: processed %d of %d records\"}%n",
                        timeoutS, processed.get(), expectedInput);
                exit = 2;
            } else {
                writeCounts(out, counts);
                double seconds = (doneNanos - firstRecordNanos.get()) / 1e9;
                double withStartup = (doneNanos - startNanos) / 1e9;
                System.out.printf(
                        "{\"records\": %d, \"billable\": %d, \"seconds\": %.4f, \"seconds_with_startup\": %.4f,"
                                + " \"records_per_s\": %.1f, \"guarantee\": \"%s\", \"threads\": %d}%n",
                        processed.get(), counts.values().stream().mapToLong(Long::longValue).sum(), seconds,
                        withStartup, processed.get() / seconds, guarantee, threads);
            }
        } finally {
            streams.close(java.time.Duration.ofSeconds(30));
            streams.cleanUp();
            deleteInternalTopics(bootstrap, appId);
        }
        System.exit(exit);
    }

    /** Decode, filter, dedupe and rate one impression; forwards {@code contract|period|rate -> 1}. */
    static final class RateProcessor implements Processor<byte[], byte[], String, Long> {
        private final long fingerprint;
        private final Map<String, Contract> byCampaign;
        private final AtomicLong processed;
        private final AtomicLong firstRecordNanos;
        private final GenericDatumReader<GenericRecord> reader;
        private final Map<String, Map<Integer, String>> periodCache = new HashMap<>();
        private ProcessorContext<String, Long> context;
        private KeyValueStore<String, Long> seen;
        private BinaryDecoder decoder;
        private GenericRecord reuse;

        RateProcessor(Schema schema, long fingerprint, Map<String, Contract> byCampaign,
                      AtomicLong processed, AtomicLong firstRecordNanos) {
            this.fingerprint = fingerprint;
            this.byCampaign = byCampaign;
            this.processed = processed;
            this.firstRecordNanos = firstRecordNanos;
            this.reader = new GenericDatumReader<>(schema);
        }

        @Override
        public void init(ProcessorContext<String, Long> context) {
            this.context = context;
            this.seen = context.getStateStore(SEEN_STORE);
        }

        @Override
        public void process(Record<byte[], byte[]> record) {
            firstRecordNanos.compareAndSet(0, System.nanoTime());
            try {
                rate(record);
            } finally {
                processed.incrementAndGet();
            }
        }

        private void rate(Record<byte[], byte[]> record) {
            byte[] value = record.value();
            if (value == null || value.length < 10 || value[0] != (byte) 0xC3 || value[1] != (byte) 0x01
                    || readFingerprint(value) != fingerprint) {
                return; // not an impression this reader knows: Tally dead-letters it, never counts it
            }
            GenericRecord imp;
            try {
                decoder = DecoderFactory.get().binaryDecoder(value, 10, value.length - 10, decoder);
                imp = reader.read(reuse, decoder);
                reuse = imp;
            } catch (IOException | RuntimeException exc) {
                return;
            }
            if (!"none".equals(imp.get("ivt").toString())) {
                return;
            }
            Contract contract = byCampaign.get(imp.get("campaign_id").toString());
            if (contract == null) {
                return;
            }
            long eventMicros = (Long) imp.get("event_time");
            if (eventMicros < contract.flightStartMicros() || eventMicros > contract.flightEndMicros()) {
                return;
            }
            String impressionId = imp.get("impression_id").toString();
            if (seen.get(impressionId) != null) {
                return;
            }
            seen.put(impressionId, eventMicros);
            String key = contract.contractId() + "|" + period(contract, eventMicros) + "|" + contract.rate();
            context.forward(new Record<>(key, 1L, record.timestamp()));
        }

        /** Calendar month in the contract's zone, cached per 15-minute UTC slot (every zone offset is a multiple of 15 minutes). */
        private String period(Contract contract, long eventMicros) {
            int slot = (int) Math.floorDiv(eventMicros, 900_000_000L);
            Map<Integer, String> cache = periodCache.computeIfAbsent(contract.contractId(), k -> new HashMap<>());
            String key = cache.get(slot);
            if (key == null) {
                ZonedDateTime local = Instant.ofEpochSecond(Math.floorDiv(eventMicros, 1_000_000L)).atZone(contract.zone());
                key = String.format("%04d-%02d", local.getYear(), local.getMonthValue());
                cache.put(slot, key);
            }
            return key;
        }

        private static long readFingerprint(byte[] value) {
            long fp = 0;
            for (int i = 9; i >= 2; i--) {
                fp = (fp << 8) | (value[i] & 0xFFL);
            }
            return fp;
        }
    }

    private static Map<String, Long> readCounts(KafkaStreams streams) {
        Map<String, Long> counts = new TreeMap<>();
        try {
            ReadOnlyKeyValueStore<String, Long> store = streams.store(
                    StoreQueryParameters.fromNameAndType(COUNT_STORE, QueryableStoreTypes.keyValueStore()));
            try (KeyValueIterator<String, Long> it = store.all()) {
                while (it.hasNext()) {
                    KeyValue<String, Long> kv = it.next();
                    counts.put(kv.key, kv.value);
                }
            }
        } catch (org.apache.kafka.streams.errors.InvalidStateStoreException exc) {
            return Map.of(); // rebalancing: ask again on the next tick
        }
        return counts;
    }

    private static void writeCounts(Path out, Map<String, Long> counts) throws IOException {
        try (PrintWriter w = new PrintWriter(Files.newBufferedWriter(out, StandardCharsets.UTF_8))) {
            for (Map.Entry<String, Long> e : counts.entrySet()) {
                w.println(e.getKey() + "\t" + e.getValue());
            }
        }
    }

    static Map<String, Contract> loadContracts(Path file) throws IOException {
        Map<String, Contract> byCampaign = new HashMap<>();
        for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
            if (line.isBlank() || line.startsWith("#")) {
                continue;
            }
            String[] f = line.split("\t");
            ZoneId zone = ZoneId.of(f[2]);
            long start = toMicros(LocalDate.parse(f[4]).atStartOfDay(zone));
            long end = toMicros(LocalDate.parse(f[5]).atTime(LocalTime.MAX).atZone(zone)); // 23:59:59.999999999 local
            byCampaign.put(f[0], new Contract(f[1], zone, f[3], start, end));
        }
        return byCampaign;
    }

    private static long toMicros(ZonedDateTime t) {
        Instant i = t.toInstant();
        return i.getEpochSecond() * 1_000_000L + i.getNano() / 1_000;
    }

    private static void deleteInternalTopics(String bootstrap, String appId) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(p)) {
            Set<String> names = admin.listTopics().names().get(30, TimeUnit.SECONDS);
            List<String> internal = names.stream().filter(n -> n.startsWith(appId + "-")).collect(Collectors.toList());
            if (!internal.isEmpty()) {
                admin.deleteTopics(internal).all().get(30, TimeUnit.SECONDS);
            }
        } catch (Exception exc) {
            System.err.println("could not delete internal topics of " + appId + ": " + exc);
        }
    }

    private static Map<String, String> parseArgs(String[] argv) {
        Map<String, String> args = new HashMap<>();
        List<String> rest = new ArrayList<>(List.of(argv));
        for (int i = 0; i + 1 < rest.size(); i += 2) {
            String k = rest.get(i);
            if (!k.startsWith("--")) {
                throw new IllegalArgumentException("expected --name value, got " + k);
            }
            args.put(k.substring(2), rest.get(i + 1));
        }
        return args;
    }

    private static String required(Map<String, String> args, String name) {
        String v = args.get(name);
        if (v == null) {
            throw new IllegalArgumentException("missing --" + name);
        }
        return v;
    }
}
