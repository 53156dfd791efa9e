CREATE TABLE "job_queue"."provider_states" (
	"provider" text NOT NULL,
	"model" text NOT NULL,
	"concurrency_limit" double precision NOT NULL,
	"blocked_until" timestamp with time zone,
	"breaker" text DEFAULT 'closed' NOT NULL,
	"consecutive_failures" integer DEFAULT 0 NOT NULL,
	"open_until" timestamp with time zone,
	"opened_count" integer DEFAULT 0 NOT NULL,
	"decreased_at" timestamp with time zone,
	"latency_ms" double precision,
	"baseline_latency_ms" double precision,
	"latency_at" timestamp with time zone,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "provider_states_provider_model_pk" PRIMARY KEY("provider","model"),
	CONSTRAINT "provider_states_breaker_check" CHECK (breaker in ('closed', 'open')),
	CONSTRAINT "provider_states_limit_check" CHECK (concurrency_limit >= 1)
);
