CREATE TABLE "core_schema"."providers" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"name" text NOT NULL,
	"kind" text NOT NULL,
	"environment" text NOT NULL,
	"base_url" text NOT NULL,
	"api_key" jsonb,
	"is_enabled" boolean DEFAULT true NOT NULL,
	"models" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"default_model" text,
	"requests_per_minute" integer,
	"tokens_per_minute" integer,
	"source" text DEFAULT 'api' NOT NULL,
	"misconfigured_at" timestamp with time zone,
	"misconfigured_reason" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "providers_environment_check" CHECK (environment in ('cloud', 'local')),
	CONSTRAINT "providers_source_check" CHECK (source in ('api', 'config')),
	CONSTRAINT "providers_rate_limits_check" CHECK (coalesce(requests_per_minute, 1) >= 1 and coalesce(tokens_per_minute, 1) >= 1)
);
--> statement-breakpoint
ALTER TABLE "job_queue"."caption_jobs" ADD COLUMN "resumed_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "job_queue"."provider_states" ADD COLUMN "outage_since" timestamp with time zone;--> statement-breakpoint
CREATE UNIQUE INDEX "providers_name_key" ON "core_schema"."providers" USING btree ("name");